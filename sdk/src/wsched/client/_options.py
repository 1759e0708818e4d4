"""What a caller can say about a task (when, deadline, retries), and how it is sent.

Task ids are chosen here, on the client, whenever the caller gives none: the API treats
an id as the idempotency key, so a submit sent again after a 503 or a broken connection
finds its first copy instead of making a second task. The ids are UUIDv7, like the ones
the API makes, so listings (ordered by id) stay in submit order.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: A duration: a ``timedelta``, seconds, or the API's text (``90s``, ``1h30m``, ``PT15M``).
Duration = dt.timedelta | float | int | str
#: A point in time: an aware ``datetime`` or RFC 3339 text with its offset.
Instant = dt.datetime | str


def new_task_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC's variant
    return str(uuid.UUID(int=value))


def duration_text(value: Duration) -> str:
    """The API's spelling of a duration; text is passed on for the API to judge."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if seconds < 0:
        raise ValueError(f"a duration counts forward from now; {seconds:g} s is negative")
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def instant_text(value: Instant) -> str:
    """RFC 3339 with the offset; a naive ``datetime`` is refused, as its zone is a guess."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no time zone; give an aware datetime, "
            "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
        )
    return value.isoformat()


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """The pause before each next attempt: ``initial * multiplier ** (attempt - 1)``, at
    most ``max``, spread by ±``jitter`` (a fraction)."""

    initial: Duration = 1.0
    multiplier: float = 2.0
    max: Duration = 300.0
    jitter: float = 0.1

    def to_json(self) -> dict[str, Any]:
        """The API's ``retry.backoff`` object."""
        return {
            "initial": duration_text(self.initial),
            "multiplier": self.multiplier,
            "max": duration_text(self.max),
            "jitter": self.jitter,
        }


@dataclass(frozen=True, kw_only=True)
class TaskRetry:
    """Retries of one task (or a pipeline), over its pipeline's policy where not set."""

    max_attempts: int | None = None
    backoff: Backoff | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's ``retry`` object."""
        out: dict[str, Any] = {}
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        if self.backoff is not None:
            out["backoff"] = self.backoff.to_json()
        return out


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task for :meth:`~wsched.Tasks.submit_many`: its data and its own options.

    ``run_at`` or ``delay`` (not both) make it ``scheduled`` until due; ``expires_at`` or
    ``expires_after`` (not both) give it a deadline: an attempt not started by then never
    starts. ``id`` is its idempotency key; without one the client picks one.
    """

    data: Mapping[str, Any]
    id: str | None = None
    run_at: Instant | None = None
    delay: Duration | None = None
    expires_at: Instant | None = None
    expires_after: Duration | None = None
    retry: TaskRetry | None = None

    def when(self) -> dict[str, str]:
        """Its timing fields in the API's spelling, the ones set only."""
        given = {
            "run_at": None if self.run_at is None else instant_text(self.run_at),
            "delay": None if self.delay is None else duration_text(self.delay),
            "expires_at": None if self.expires_at is None else instant_text(self.expires_at),
            "expires_after": None
            if self.expires_after is None
            else duration_text(self.expires_after),
        }
        return {key: value for key, value in given.items() if value is not None}

    def batch_item(self, task_id: str) -> dict[str, Any]:
        """The item of ``POST .../tasks`` for this task under ``task_id``."""
        item: dict[str, Any] = {"id": task_id, "data": dict(self.data), **self.when()}
        if self.retry is not None:
            item["retry"] = self.retry.to_json()
        return item


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the API stores batch items: NaN and Infinity are not JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
