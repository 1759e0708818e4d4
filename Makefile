# One entry point for every developer command. Each target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp
#: Where `make bench` keeps its JSON reports.
BENCH_OUT ?= bench-report
PROTO_SRC := $(shell find protos -name '*.proto')

.PHONY: install bench-install browser-install dev test test-unit lint bench protos provision clean sdk-reference

install: $(STAMP)

## The server (the root's pyproject) and the Python SDK it depends on (sdk/), both editable.
$(STAMP): pyproject.toml sdk/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ./sdk -e '.[dev,embedded]'
	touch $@

## The `bench` extra (Celery, redis-py) and a Redis server: Debian's redis-server, as no
## redis-server wheel installs from PyPI.
bench-install: $(BENCH_STAMP)
	@command -v redis-server >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; }

## Debian's chromium for the dashboard's browser tests (tests/e2e/test_dashboard.py):
## Playwright drives it, as Playwright's own browser builds cannot be downloaded here.
browser-install:
	@command -v chromium >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -e ./sdk -e '.[dev,embedded,bench]'
	touch $@

## Run the whole product locally on embedded defaults (Ctrl-C stops everything).
dev: install
	$(BIN)/wsched dev

## Provision the real components (cached), then run every test against them.
test: install bench-install browser-install provision
	$(BIN)/pytest

## Unit tests only: the fast inner loop.
test-unit: install
	$(BIN)/pytest tests/unit

provision: install
	$(BIN)/wsched infra provision

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy services actors tests sdk

## Ours, then Celery with Redis on the same workload (each alone), then the Kubernetes side.
bench: install bench-install provision
	mkdir -p $(BENCH_OUT)
	$(BIN)/wsched bench --json > $(BENCH_OUT)/ours.json
	$(BIN)/wsched bench-celery --ours $(BENCH_OUT)/ours.json
	$(BIN)/wsched bench-deploy
	$(BIN)/wsched bench-worker

protos: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. $(PROTO_SRC)

## The SDK's API reference, from its docstrings (a unit test checks it is up to date).
sdk-reference: install
	$(BIN)/python sdk/reference.py > docs/sdk-reference.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
