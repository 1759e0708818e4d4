"""The records of ``wsched.events``: one per committed grain write, keyed by pipeline.

JSON rather than protobuf: the records are small, short-lived (an hour's retention, no
replay across versions beyond that), and the API sends their content on to SSE clients
as JSON anyway. ``v`` is checked so that a future format is skipped, not misread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.pipeline.events import EventBatch, StatusChange

EVENTS_TOPIC = "wsched.events"
#: Partitions of the events topic: every API process reads them all, so a few suffice.
EVENTS_PARTITIONS = 8
#: Long enough for an SSE client to reconnect and resume, short enough to stay small.
EVENTS_RETENTION_MS = 3_600_000
WIRE_VERSION = 1
#: Changes per record: a large flush is cut so that a record stays well below the
#: broker's ``message.max.bytes`` (1 MiB by default).
MAX_CHANGES_PER_RECORD = 2_000


class BadEvent(ValueError):
    """A record of the events topic that is not one this version understands."""


@dataclass(frozen=True, kw_only=True)
class LiveEvent:
    pipeline_id: str
    changes: tuple[StatusChange, ...]
    counts: Mapping[str, int] = field(default_factory=dict)
    #: The grain's wall clock just after its commit, in ms since the epoch (0: unknown).
    at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        """The SSE ``data`` of this event."""
        return {
            "changes": [
                {"id": c.task_id, "status": c.status, "attempt": c.attempt} for c in self.changes
            ],
            "counts": dict(self.counts),
        }


def encode(batch: EventBatch) -> list[tuple[bytes, bytes]]:
    """(key, value) of the records that carry one batch: the pipeline id as key, so a
    pipeline's events keep their order on one partition."""
    key = batch.grain.pipeline_id.encode()
    changes = batch.changes
    records = []
    for start in range(0, len(changes), MAX_CHANGES_PER_RECORD):
        chunk = changes[start : start + MAX_CHANGES_PER_RECORD]
        body = {
            "v": WIRE_VERSION,
            "pipeline": batch.grain.pipeline_id,
            "slice": batch.grain.slice,
            "changes": [[c.task_id, c.status, c.attempt] for c in chunk],
            "counts": dict(batch.counts),
            "at_ms": int(batch.at.timestamp() * 1000) if batch.at is not None else 0,
        }
        records.append((key, json.dumps(body, separators=(",", ":")).encode()))
    return records


def decode(value: bytes | None) -> LiveEvent:
    try:
        body = json.loads(value or b"")
        if body.get("v") != WIRE_VERSION:
            raise BadEvent(f"events record version {body.get('v')!r}, not {WIRE_VERSION}")
        changes = tuple(
            StatusChange(task_id=str(i), status=str(s), attempt=int(a))
            for i, s, a in body["changes"]
        )
        counts = {str(k): int(v) for k, v in body.get("counts", {}).items()}
        return LiveEvent(
            pipeline_id=str(body["pipeline"]),
            changes=changes,
            counts=counts,
            at_ms=int(body.get("at_ms", 0)),
        )
    except BadEvent:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise BadEvent(f"undecodable events record: {type(err).__name__}: {err}") from err
