"""A pipeline's live events in the SDK: parsed from SSE, resumed across reconnects."""

from __future__ import annotations

import itertools

import httpx

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, error
from wsched.client._events import parse_lines

STREAM_1 = (
    "retry: 2000\n\n"
    ": keep-alive\n\n"
    'id: 0:5\nevent: tasks\ndata: {"changes":[{"id":"a","status":"succeeded","attempt":1}],'
    '"counts":{"succeeded":1}}\n\n'
)
STREAM_2 = 'id: 0:6\nevent: tasks\ndata: {"changes":[],"counts":{"queued":2}}\n\n'


def sse(text: str) -> httpx.Response:
    return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})


def test_lines_make_events_and_comments_are_skipped() -> None:
    lines = [*STREAM_1.split("\n"), 'event: gap\ndata: {"detail":"expired"}', ""]
    events = list(parse_lines("\n".join(lines).split("\n")))
    assert [(e.kind, e.id) for e in events] == [("tasks", "0:5"), ("gap", None)]
    assert events[0].changes == (wsched.TaskChange(id="a", status="succeeded", attempt=1),)
    assert events[0].counts == {"succeeded": 1}
    assert events[1].detail == "expired"


def test_events_reconnect_after_the_last_event_seen() -> None:
    api = FakeApi().then(sse(STREAM_1), sse(STREAM_2))
    with wsched.Client(
        "http://api", api_key="k", transport=api.transport(), sleep=Clock().sleep
    ) as sdk:
        stream = sdk.tasks("shop", "echo").events(last_event_id="0:4")
        events = list(itertools.islice(stream, 2))
    assert [e.id for e in events] == ["0:5", "0:6"]
    assert [r.headers.get("Last-Event-ID") for r in api.requests] == ["0:4", "0:5"]
    assert api.requests[0].url.path == "/api/applications/shop/pipelines/echo/events"


def test_an_error_answer_is_raised_as_the_apis_error() -> None:
    api = FakeApi().then(error(404, "not_found", "no pipeline named 'echo'"))
    with wsched.Client("http://api", api_key="k", transport=api.transport()) as sdk:
        try:
            next(sdk.tasks("shop", "echo").events())
        except wsched.NotFound as raised:
            assert "echo" in str(raised)
        else:
            raise AssertionError("no error raised")


async def test_the_async_client_streams_the_same_events() -> None:
    api = FakeApi().then(sse(STREAM_1), sse(STREAM_2))
    async with wsched.AsyncClient(
        "http://api", api_key="k", transport=httpx.MockTransport(api.handle)
    ) as sdk:
        got = []
        async for event in sdk.tasks("shop", "echo").events():
            got.append(event.id)
            if len(got) == 2:
                break
    assert got == ["0:5", "0:6"]
    assert api.requests[1].headers["Last-Event-ID"] == "0:5"
