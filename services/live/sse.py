"""Server-Sent Events for a pipeline's live results: framing, and resuming a stream.

Each event's id is its ``<partition>:<offset>`` in ``wsched.events``; a client that
reconnects with ``Last-Event-ID`` gets what it missed from Kafka (within the topic's
retention) and then the live events, without a duplicate or a gap in between.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.live.hub import LiveHub, Subscription
from services.live.source import Delivered, EventSource, Position

#: How long a browser's EventSource waits before reconnecting, in ms.
RETRY_MS = 2_000


def frame(*, event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE event: ``data`` as one line of JSON (so no line of it can end the event)."""
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}"]
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    """A line every client ignores: keeps proxies from closing an idle stream."""
    return f": {text}\n\n"


def tasks_frame(delivered: Delivered) -> str:
    return frame(event="tasks", data=delivered.event.to_json(), event_id=str(delivered.position))


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    #: The stream ends after this long; the client reconnects and resumes.
    duration_s: float
    keepalive_s: float = 15.0


class _Resume:
    """What the stream has sent, so the live events that the replay also read are skipped."""

    def __init__(self, last: Position | None) -> None:
        self.last = last

    def fresh(self, delivered: Delivered) -> bool:
        last, position = self.last, delivered.position
        same = last is not None and position.partition == last.partition
        if same and last is not None and position.offset <= last.offset:
            return False
        self.last = position
        return True


async def stream(
    *,
    hub: LiveHub,
    source: EventSource,
    pipeline_id: str,
    last_event_id: Position | None,
    options: StreamOptions,
    clock: Callable[[], float],
    counts: Callable[[], Awaitable[Mapping[str, int]]],
) -> AsyncIterator[str]:
    """The text of one pipeline's event stream, from ``last_event_id`` (or now) on.

    The subscription is taken before the replay starts, so every event is either in the
    replay or in the subscription (or both: then it is sent once). A new stream starts
    with the pipeline's ``counts`` as last written, read after subscribing: a write
    committed after that read has its event in the stream.
    """
    deadline = clock() + options.duration_s
    with hub.subscribe(pipeline_id) as subscription:
        yield f"retry: {RETRY_MS}\n\n"
        resume = _Resume(last_event_id)
        if last_event_id is None:
            yield frame(event="counts", data={"counts": dict(await counts())})
        else:
            async for text in _replay(source, pipeline_id, last_event_id, resume):
                yield text
        async for text in _live(subscription, resume, options, deadline, clock):
            yield text


async def _replay(
    source: EventSource, pipeline_id: str, last: Position, resume: _Resume
) -> AsyncIterator[str]:
    start = last.offset + 1
    end = await source.end_offset(last.partition)
    expected = start
    async for delivered in source.replay(last.partition, start, end):
        if delivered.position.offset > expected and expected == start:
            yield _gap(last)
        expected = delivered.position.offset + 1
        if delivered.event.pipeline_id == pipeline_id and resume.fresh(delivered):
            yield tasks_frame(delivered)
    if expected == start and end > start:
        yield _gap(last)  # everything after the client's last event has expired


def _gap(last: Position) -> str:
    detail = (
        f"events after {last} are no longer kept; read the tasks and /stats for the current state"
    )
    return frame(event="gap", data={"after": str(last), "detail": detail})


async def _live(
    subscription: Subscription,
    resume: _Resume,
    options: StreamOptions,
    deadline: float,
    clock: Callable[[], float],
) -> AsyncIterator[str]:
    while (left := deadline - clock()) > 0:
        delivered = await subscription.next(min(options.keepalive_s, left))
        if delivered is not None:
            if resume.fresh(delivered):
                yield tasks_frame(delivered)
        elif subscription.overflowed:
            detail = "this stream fell behind; reconnect with Last-Event-ID to catch up"
            yield frame(event="reconnect", data={"detail": detail})
            return
        elif deadline - clock() > 0:
            yield comment("keep-alive")
