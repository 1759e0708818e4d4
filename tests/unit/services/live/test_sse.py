"""SSE framing and resuming with Last-Event-ID over the in-memory events log."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors.pipeline.events import StatusChange
from services.live.hub import LiveHub
from services.live.source import MemoryEventLog, Position
from services.live.sse import StreamOptions, comment, frame, stream
from services.live.wire import LiveEvent


def event(pipeline: str, task: str, status: str) -> LiveEvent:
    change = StatusChange(task_id=task, status=status, attempt=1)
    return LiveEvent(pipeline_id=pipeline, changes=(change,), counts={status: 1})


def parse(text: str) -> list[dict[str, str]]:
    """The events of an SSE body: each a dict of its fields (comments left out)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "event" in fields:
            events.append(fields)
    return events


def test_a_frame_is_id_event_and_one_line_of_json() -> None:
    text = frame(event="tasks", data={"a": "x\ny"}, event_id="3:14")
    assert text == 'id: 3:14\nevent: tasks\ndata: {"a":"x\\ny"}\n\n'
    assert comment("keep-alive") == ": keep-alive\n\n"


@pytest.mark.parametrize("text", ["3:14", " 0:0 "])
def test_a_last_event_id_is_partition_and_offset(text: str) -> None:
    assert Position.parse(text).offset in (14, 0)


@pytest.mark.parametrize("text", ["", "3", "a:1", "1:-2", "1:2:3", "9" * 30 + ":1"])
def test_anything_else_is_not_a_last_event_id(text: str) -> None:
    with pytest.raises(ValueError, match="partition"):
        Position.parse(text)


async def counts() -> dict[str, int]:
    return {"queued": 7}


async def collect(
    hub: LiveHub, log: MemoryEventLog, last: Position | None, *, during: float = 0.2
) -> list[dict[str, str]]:
    loop = asyncio.get_running_loop()
    body = stream(
        hub=hub,
        source=log,
        pipeline_id="p",
        last_event_id=last,
        options=StreamOptions(duration_s=during, keepalive_s=0.05),
        clock=loop.time,
        counts=counts,
    )
    return parse("".join([text async for text in body]))


async def test_a_stream_sends_its_pipelines_live_events_with_their_positions() -> None:
    hub, log = LiveHub(), MemoryEventLog(partitions=1)
    log.append(event("p", "t0", "queued"))  # before the stream: not sent
    following = asyncio.create_task(hub.run(log))
    await log.following.wait()

    async def later() -> None:
        await asyncio.sleep(0.05)
        log.append(event("p", "t1", "succeeded"))
        log.append(event("q", "x", "queued"))

    producing = asyncio.create_task(later())
    events = await collect(hub, log, None)
    await producing
    following.cancel()
    assert [(e.get("id"), e["event"]) for e in events] == [(None, "counts"), ("0:1", "tasks")]
    assert json.loads(events[0]["data"]) == {"counts": {"queued": 7}}
    data = json.loads(events[1]["data"])
    assert data == {
        "changes": [{"id": "t1", "status": "succeeded", "attempt": 1}],
        "counts": {"succeeded": 1},
    }


async def test_resuming_sends_what_was_missed_then_live_ones_once_each() -> None:
    hub, log = LiveHub(), MemoryEventLog(partitions=1)
    first = log.append(event("p", "t1", "queued"))
    log.append(event("q", "x", "queued"))
    log.append(event("p", "t1", "leased"))
    following = asyncio.create_task(hub.run(log))
    await log.following.wait()

    async def later() -> None:
        await asyncio.sleep(0.05)
        log.append(event("p", "t1", "succeeded"))

    producing = asyncio.create_task(later())
    events = await collect(hub, log, first)
    await producing
    following.cancel()
    assert [e["id"] for e in events] == ["0:2", "0:3"]
    assert [json.loads(e["data"])["changes"][0]["status"] for e in events] == [
        "leased",
        "succeeded",
    ]


async def test_resuming_after_events_expired_says_so() -> None:
    hub, log = LiveHub(), MemoryEventLog(partitions=1)
    for status in ("queued", "leased", "succeeded"):
        log.append(event("p", "t1", status))
    log.forget(0, 2)
    events = await collect(hub, log, Position(partition=0, offset=0), during=0.01)
    assert [e["event"] for e in events] == ["gap", "tasks"]
    assert events[1]["id"] == "0:2"
