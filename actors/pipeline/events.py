"""Live results: what a grain tells the outside world after its writes are durable (D6).

Waiters and event streams live in API processes, grains in scheduler replicas: the grain
publishes, after each committed write, the status changes it made durable and the
pipeline's counters. The values here are pure; the port is ``ports.EventSink``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.pipeline.model import TERMINAL, GrainKey, Status

#: Not a row status: the row is gone (a purge). A waiter re-reads and finds no task.
PURGED = "purged"


@dataclass(frozen=True, kw_only=True)
class StatusChange:
    """One task's status as a committed write left it."""

    task_id: str
    #: A :class:`Status` value, or :data:`PURGED`.
    status: str
    #: 0 when the write does not say (a cancel or purge done by the store alone).
    attempt: int

    @property
    def final(self) -> bool:
        """Whether a waiter for the task's end should re-read the row now."""
        return self.status == PURGED or self.status in TERMINAL


@dataclass(frozen=True, kw_only=True)
class EventBatch:
    """What one committed write (or a few, within one mailbox turn) made durable."""

    grain: GrainKey
    changes: tuple[StatusChange, ...]
    counts: Mapping[str, int] = field(default_factory=dict)
    #: When the grain published it, just after the commit: readers measure their lag.
    at: dt.datetime | None = None


def change_of(task_id: str, status: Status | str, attempt: int) -> StatusChange:
    return StatusChange(task_id=task_id, status=str(status), attempt=attempt)
