"""The tenant commands of ``wsched`` speak HTTP through the SDK: what they send, what
they print, how an error ends them. The API is scripted (``httpx.MockTransport``); the
real one is driven by ``tests/e2e/test_cli.py``."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

import wsched
from services.cli import app
from tests.unit.wsched.fakes import FakeApi, answer, batch_answer, error
from tests.unit.wsched.test_pipelines import pipeline_json

PIPE = "/api/applications/shop/pipelines/echo"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """Every ``wsched.Client`` the CLI makes talks to this API, without retry pauses."""
    fake = FakeApi()
    client = functools.partial(wsched.Client, transport=fake.transport(), sleep=lambda _: None)
    monkeypatch.setattr(wsched, "Client", client)
    monkeypatch.setenv("WSCHED_API_URL", "http://api")
    monkeypatch.setenv("WSCHED_API_KEY", "wsk_tenant")
    monkeypatch.setenv("WSCHED_OPERATOR_KEY", "op")
    yield fake


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_one_task_is_submitted_with_its_options_and_printed(api: FakeApi) -> None:
    api.then(answer(202, {"id": "greeting", "status": "scheduled"}))
    code, stdout, _ = run(
        "tasks", "submit", "shop", "echo", '{"m": "hi"}', "--id", "greeting", "--delay", "30s",
        "--expires-after", "10m", "--max-attempts", "2",
    )  # fmt: skip
    assert code == 0 and json.loads(stdout) == {"id": "greeting", "status": "scheduled"}
    sent = api.requests[0]
    assert (sent.url.path, sent.content) == (PIPE, b'{"m":"hi"}')
    assert dict(sent.url.params) == {
        "id": "greeting",
        "delay": "30s",
        "expires_after": "10m",
        "max_attempts": "2",
    }


def test_many_tasks_go_as_batches_with_the_count_printed(api: FakeApi) -> None:
    api.then(batch_answer)
    lines = "\n".join(json.dumps({"m": i}) for i in range(5))
    code, _, stderr = run(
        "tasks", "submit", "shop", "echo", "--at", "2026-12-01T09:00Z", stdin=lines
    )
    assert code == 0 and "queued 5 of 5 tasks" in stderr
    items = api.bodies()[0]["tasks"]
    assert [i["data"] for i in items] == [{"m": i} for i in range(5)]
    assert {i["run_at"] for i in items} == {"2026-12-01T09:00Z"} and all(i["id"] for i in items)


def test_an_api_error_prints_its_code_and_detail(api: FakeApi) -> None:
    api.then(error(422, "invalid_request", "delay: '400d' is more than 365 days ahead"))
    code, _, stderr = run("tasks", "submit", "shop", "echo", "{}", "--delay", "400d")
    assert code == 1 and "422 invalid_request: delay:" in stderr


def test_an_unreachable_api_says_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monkeypatch.setattr(
        wsched, "Client", functools.partial(wsched.Client, transport=httpx.MockTransport(refuse))
    )
    monkeypatch.setenv("WSCHED_API_URL", "http://api:1")
    monkeypatch.setenv("WSCHED_API_KEY", "k")
    code, _, stderr = run("apps", "list")
    assert code == 1 and "Cannot reach the API at http://api:1" in stderr
    assert "wsched dev" in stderr


def test_tenants_use_the_operator_key_and_print_the_export_line(api: FakeApi) -> None:
    created = {"id": "t1", "name": "acme", "created_at": "2026-11-26T12:00:00Z", "api_key": "wsk_1"}
    api.then(answer(201, created))
    code, stdout, stderr = run("tenants", "create", "acme")
    assert code == 0 and json.loads(stdout) == created
    assert "export WSCHED_API_KEY=wsk_1" in stderr
    assert api.requests[0].headers["Authorization"] == "Bearer op"


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (["--topic", "shared"], {"topic": "shared"}),
        (["--topic", "dedicated", "--partitions", "4"], {"topic": "dedicated", "partitions": 4}),
        ([], {}),  # the API's defaults: its topic, 2 partitions
    ],
)
def test_a_pipeline_is_created_on_the_topic_asked_for(
    api: FakeApi, options: list[str], sent: dict[str, object]
) -> None:
    api.then(answer(201, pipeline_json("provisioning", worker_token="wst_1")))
    code, _, _ = run("pipelines", "create", "shop", "echo", "--chart", "c", "--no-wait", *options)
    assert code == 0
    body = json.loads(api.requests[0].content)
    assert {k: v for k, v in body.items() if k in ("topic", "partitions")} == sent


def test_an_unknown_topic_is_refused_before_anything_is_sent(api: FakeApi) -> None:
    code, _, stderr = run("pipelines", "create", "shop", "echo", "--chart", "c", "--topic", "own")
    assert code == 2 and "own" in stderr
    assert api.requests == []


TENANT_QUOTAS = {
    "id": "t1",
    "name": "acme",
    "created_at": "2026-11-26T12:00:00Z",
    "quotas": {"max_pipelines": 100, "submit_rate": 500.0},
    "overrides": {"max_pipelines": None, "submit_rate": 500.0},
    "usage": {"pipelines": 2, "backlog": 40},
}


def test_tenant_quotas_are_patched_with_the_operator_key(api: FakeApi) -> None:
    api.then(answer(200, TENANT_QUOTAS))
    code, stdout, _ = run(
        "tenants", "quota", "acme", "--submit-rate", "500", "--max-backlog", "0",
        "--default", "max_pipelines",
    )  # fmt: skip
    assert code == 0 and json.loads(stdout) == TENANT_QUOTAS
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("PATCH", "/api/tenants/acme")
    assert sent.headers["Authorization"] == "Bearer op"
    assert json.loads(sent.content) == {
        "quotas": {"submit_rate": 500.0, "max_backlog": 0, "max_pipelines": None}
    }


def test_a_quota_command_without_a_quota_changes_nothing(api: FakeApi) -> None:
    code, _, stderr = run("tenants", "quota", "acme")
    assert code == 2 and "Nothing to change" in stderr
    assert api.requests == []


def test_a_tenant_reads_its_own_quotas_with_its_key(api: FakeApi) -> None:
    api.then(answer(200, TENANT_QUOTAS))
    code, stdout, _ = run("tenants", "me")
    assert code == 0 and json.loads(stdout)["usage"] == {"pipelines": 2, "backlog": 40}
    sent = api.requests[0]
    assert (sent.method, sent.url.path) == ("GET", "/api/tenant")
    assert sent.headers["Authorization"] == "Bearer wsk_tenant"


def test_listings_print_what_the_api_answered(api: FakeApi) -> None:
    apps = {"applications": [{"id": "a1", "name": "shop", "created_at": "2026-11-26T12:00:00Z"}]}
    api.then(answer(200, apps))
    code, stdout, _ = run("apps", "list")
    assert code == 0 and json.loads(stdout) == apps


def test_key_and_lifecycle_commands_use_the_right_key_and_print_what_matters(
    api: FakeApi,
) -> None:
    until = "2026-11-26T13:00:00Z"
    tenant = {"id": "t1", "name": "acme", "created_at": "2026-11-26T12:00:00Z"}
    api.then(
        answer(200, {"api_key": "wsk_new", "previous_key_valid_until": until}),
        answer(200, {"revoked": True, "detail": "refused"}),
        answer(202, {**tenant, "state": "deleting", "deletion": {"step": "pipelines"}}),
        answer(200, {"worker_token": "wst_new", "previous_token_valid_until": None}),
    )
    code, stdout, stderr = run("tenants", "rotate-key", "acme", "--grace-s", "600")
    assert code == 0 and "export WSCHED_API_KEY=wsk_new" in stderr
    assert json.loads(stdout) == {"previous_key_valid_until": "2026-11-26 13:00:00+00:00"}
    code, _, stderr = run("tenants", "revoke-key", "acme")
    assert code == 0 and "every key of tenant acme is refused" in stderr
    code, stdout, _ = run("tenants", "delete", "acme")
    assert code == 0 and json.loads(stdout)["state"] == "deleting"
    code, stdout, _ = run("pipelines", "rotate-token", "shop", "echo", "--grace-s", "60")
    assert code == 0 and json.loads(stdout)["worker_token"] == "wst_new"
    keys = [r.headers["authorization"] for r in api.requests]
    assert keys == ["Bearer op", "Bearer op", "Bearer op", "Bearer wsk_tenant"]
    assert api.bodies()[0] == {"grace_s": 600} and api.bodies()[3] == {"grace_s": 60}
    code, _, stderr = run("tenants", "rotate-key", "acme", "--grace-s", "-1")
    assert code == 2 and "--grace-s" in stderr
