"""Error answers become exceptions carrying the API's ``error`` code and ``detail``."""

from __future__ import annotations

import httpx
import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, error


def client(api: FakeApi) -> wsched.Client:
    clock = Clock()
    return wsched.Client(
        "http://api", api_key="wsk_x", transport=api.transport(), sleep=clock.sleep, clock=clock
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, wsched.BadRequest),
        (401, wsched.Unauthorized),
        (403, wsched.Forbidden),
        (404, wsched.NotFound),
        (409, wsched.Conflict),
        (413, wsched.PayloadTooLarge),
        (422, wsched.InvalidRequest),
        (500, wsched.ServerError),
        (418, wsched.ApiError),
    ],
)
def test_each_status_is_its_own_exception_with_code_and_detail(
    status: int, kind: type[wsched.ApiError]
) -> None:
    api = FakeApi().then(error(status, "some_code", "what to do"))
    with client(api) as sdk, pytest.raises(kind) as raised:
        sdk.applications.create("shop")
    assert (raised.value.status, raised.value.error, raised.value.detail) == (
        status,
        "some_code",
        "what to do",
    )
    # The CLI prints exactly this line.
    assert str(raised.value) == f"{status} some_code: what to do"


def test_an_answer_not_in_the_api_shape_keeps_its_text() -> None:
    api = FakeApi().then(httpx.Response(502, text="<html>bad gateway</html>"))
    with client(api) as sdk, pytest.raises(wsched.ServerError) as raised:
        sdk.applications.list()
    assert raised.value.error == ""
    assert str(raised.value) == "502: <html>bad gateway</html>"


def test_a_conflict_keeps_the_api_code_to_branch_on() -> None:
    api = FakeApi().then(error(409, "pipeline_not_ready", "pipeline 'echo' is provisioning"))
    with client(api) as sdk, pytest.raises(wsched.Conflict) as raised:
        sdk.tasks("shop", "echo").submit({"n": 1})
    assert raised.value.error == "pipeline_not_ready"


def test_an_unreachable_api_is_a_connection_failure_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        wsched.Client("http://api:1", api_key="k", transport=httpx.MockTransport(refuse)) as sdk,
        pytest.raises(wsched.ConnectionFailed) as raised,
    ):
        sdk.applications.list()
    assert "http://api:1" in str(raised.value) and "connection refused" in str(raised.value)


def test_every_request_carries_the_key_and_the_sdk_version() -> None:
    api = FakeApi().then(answer(200, {"applications": []}))
    with client(api) as sdk:
        assert sdk.applications.list() == []
    sent = api.requests[0]
    assert sent.headers["Authorization"] == "Bearer wsk_x"
    assert sent.headers["User-Agent"] == f"wsched-python/{wsched.__version__}"


def test_a_delete_answers_no_body() -> None:
    api = FakeApi().then(answer(204))
    with client(api) as sdk:
        sdk.applications.delete("shop")
    assert (api.requests[0].method, api.requests[0].url.path) == (
        "DELETE",
        "/api/applications/shop",
    )
