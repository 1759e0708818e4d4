"""Schemathesis over the API's own OpenAPI: no 5xx, and every answer as documented.

The app runs in-process, over SQLite and in-memory ports, reached through schemathesis'
ASGI transport (which also runs its lifespan, so the reconciler makes the pipeline
ready). Each operation gets a world of its own, so that a DELETE cannot empty the world
of the operations after it: a tenant ``t`` with application ``a``, a ready pipeline ``p``
and tasks ``t1`` (queued) and ``t2`` (dead). Fuzz dictionaries put those names into most
path parameters, so requests reach real objects instead of answering 404; the rest are
generated, so unknown and malformed names are tried too.

Schemathesis' pytest loaders are not used: ``from_fixture`` fails on pytest 9.2 (it
reads ``Node._nodeid``, which pytest dropped), and an eager schema would build the app at
import. Each operation's strategy is driven by Hypothesis here instead, positive and
negative data alike, deterministically (``derandomize``), so a run in CI repeats.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from services.api.app import create_app
from services.deploy.ports import NoopDeployer
from services.kafka.admin import MemoryTopicAdmin
from services.kafka.producer import MemoryProducer
from tests.unit.services.api.conftest import LIMITS
from tests.unit.services.api.harness import (
    OPERATOR,
    bearer,
    insert_task,
    migrated,
    settings_for,
)
from tests.unit.services.api.test_isolation import ROUTES

#: Examples per operation: enough to reach each route's checks, within ~60 s in all.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Not ready is what the readiness probe answers here, by design: there is no Kafka.
SERVES_503 = {"/readyz"}

PROBES = ("GET /healthz", "GET /readyz", "GET /metrics")

#: Real objects for path parameters, and how often a parameter takes one.
DICTIONARIES = {"tenant": ["t"], "app": ["a"], "pipeline": ["p"], "task_id": ["t1", "t2"]}
PROBABILITY = 0.9


def config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "dictionaries": {name: {"values": values} for name, values in DICTIONARIES.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": PROBABILITY}
                for name in DICTIONARIES
            },
        }
    )


# -- the world each operation starts from --------------------------------------------------


def wait_ready(client: Any, key: str, *, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = client.get("/api/applications/a/pipelines/p", headers=bearer(key)).json()
        if state["state"] == "ready":
            return
        time.sleep(0.01)
    raise AssertionError(f"pipeline p is not ready after {timeout_s} s: {state}")


def populate(client: Any, database_url: str) -> str:
    """Tenant ``t`` with application ``a``, ready pipeline ``p``, tasks; the tenant's key."""
    answer = client.post("/api/tenants", json={"name": "t"}, headers=OPERATOR)
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["api_key"]
    answer = client.post("/api/applications", json={"name": "a"}, headers=bearer(key))
    assert answer.status_code == 201, answer.text
    body = {"name": "p", "chart": "./charts/noop"}
    answer = client.post("/api/applications/a/pipelines", json=body, headers=bearer(key))
    assert answer.status_code == 201, answer.text
    pipeline_id = answer.json()["id"]
    wait_ready(client, key)
    for task_id, status in (("t1", "queued"), ("t2", "dead")):
        insert_task(
            database_url, pipeline_id=pipeline_id, task_id=task_id, data=b"{}", status=status
        )
    return key


@dataclass(frozen=True, kw_only=True)
class World:
    schema: Any
    tenant_key: str

    def headers(self, path: str) -> dict[str, str]:
        """The operator key for the operator's routes, the tenant's for the rest."""
        return OPERATOR if path.startswith("/api/tenants") else bearer(self.tenant_key)


@contextlib.contextmanager
def world(database_url: str) -> Iterator[World]:
    migrated(database_url)
    app = create_app(
        settings_for(database_url),
        limits=LIMITS,
        producer=MemoryProducer(),
        admin=MemoryTopicAdmin(),
        deployer=NoopDeployer(),
    )
    try:
        with asgi.get_client(app) as client:  # type: ignore[arg-type]  # an ASGI app
            key = populate(client, database_url)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config())
        yield World(schema=schema, tenant_key=key)
    finally:
        asgi.shutdown_lifespans()  # the reconciler stops with its world


# -- the run -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Figures:
    #: Statuses answered, per operation label.
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def report(self, elapsed_s: float) -> str:
        examples = sum(sum(c.values()) for c in self.statuses.values())
        only_404 = sorted(label for label, c in self.statuses.items() if set(c) == {404})
        lines = [
            f"{len(self.statuses)} operations, {examples} requests in {elapsed_s:.1f} s; "
            f"answered only 404: {only_404 or 'none'}"
        ]
        for label, counter in sorted(self.statuses.items()):
            lines.append(f"  {label}: {dict(sorted(counter.items()))}")
        return "\n".join(lines)


def exercise(operation: Any, world: World, figures: Figures) -> None:
    """About ``MAX_EXAMPLES`` positive and as many negative cases, each checked."""
    headers = world.headers(operation.path)
    checks = [c for c in CHECKS if not (c is not_a_server_error and operation.path in SERVES_503)]
    seen = figures.statuses.setdefault(operation.label, Counter())
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES * 2,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        seen[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=headers)

    check()


def test_the_api_answers_as_its_openapi_says(tmp_path: Path) -> None:
    started = time.monotonic()
    figures = Figures()
    with world(f"sqlite:///{tmp_path / 'schema.db'}") as first:
        operations = [result.ok() for result in first.schema.get_all_operations()]
    served = {f"{method} {path}" for method, path in ROUTES} | set(PROBES)
    assert {operation.label for operation in operations} == served
    for n, listed in enumerate(operations):
        with world(f"sqlite:///{tmp_path / f'op{n}.db'}") as fresh:
            operation = fresh.schema[listed.path][listed.method]
            try:
                exercise(operation, fresh, figures)
            # Schemathesis raises a group of the distinct failures it found, and the
            # transport re-raises an exception the app answered 500 for: each
            # operation's are collected, so that one run reports them all.
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001
                figures.failures[operation.label] = f"{type(err).__name__}: {err}"
    report = figures.report(time.monotonic() - started)
    print(report)  # the figures, shown with -s
    assert not figures.failures, "\n\n".join(
        [report, *(f"{label}:\n{text}" for label, text in figures.failures.items())]
    )
