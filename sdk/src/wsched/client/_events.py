"""A pipeline's live events (``GET .../pipelines/{p}/events``, Server-Sent Events): the
models, and the parsing of the stream's lines. Pure code; the clients read the lines.

A stream ends after a while (the API's choice, five minutes by default); the clients
reconnect with the last event's id as ``Last-Event-ID`` and the API sends what was missed,
so a caller iterating :meth:`Tasks.events` sees one unbroken sequence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from wsched.client._calls import pipeline_path


@dataclass(frozen=True, kw_only=True)
class TaskChange:
    """A task's status as a committed write left it (``attempt`` 0: not said)."""

    id: str
    status: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class PipelineEvent:
    """One event of the stream.

    ``kind`` is ``counts`` (the first of a new stream: the pipeline's ``counts`` as last
    written), ``tasks`` (``changes`` and the pipeline's ``counts`` by status), ``gap``
    (events after the resumed id have expired: read the tasks for the current state) or
    ``reconnect`` (the stream fell behind; the client reconnects by itself).
    """

    kind: str
    #: ``<partition>:<offset>``: give it back as ``last_event_id`` to resume after it.
    id: str | None = None
    changes: tuple[TaskChange, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    detail: str | None = None


def events_path(app: str, pipeline: str) -> str:
    return f"{pipeline_path(app, pipeline)}/events"


def stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def parse_lines(lines: Iterable[str]) -> Iterator[PipelineEvent]:
    """The events of an SSE stream, from its lines (without their line ends)."""
    fields: dict[str, str] = {}
    for line in lines:
        event = parse_event(fields, line)
        if event is not None:
            yield event


def parse_event(fields: dict[str, str], line: str) -> PipelineEvent | None:
    """Take one line into ``fields``; at the blank line that ends an event, the event
    (and ``fields`` emptied for the next one). Comments and unnamed events are skipped."""
    if line:
        if not line.startswith(":") and ":" in line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        return None
    event = _event(fields) if "event" in fields else None
    fields.clear()
    return event


def _event(fields: Mapping[str, str]) -> PipelineEvent:
    try:
        data: Any = json.loads(fields.get("data") or "{}")
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    changes = tuple(
        TaskChange(id=str(c["id"]), status=str(c["status"]), attempt=int(c.get("attempt", 0)))
        for c in data.get("changes", [])
        if isinstance(c, dict) and "id" in c and "status" in c
    )
    counts = {str(k): int(v) for k, v in dict(data.get("counts", {})).items()}
    detail = data.get("detail")
    return PipelineEvent(
        kind=fields["event"],
        id=fields.get("id"),
        changes=changes,
        counts=counts,
        detail=str(detail) if detail is not None else None,
    )
