"""When to send a request again, and after how long: pure code shared by both clients.

The API answers 503 with ``Retry-After`` when Kafka or the database does not answer in
time, and says "the request may or may not have taken effect: retry with the same task
ids"; a gateway in front of it may answer 429 the same way. Only requests that are safe
to repeat are retried (reads, and submits, whose ids the client fixed before the first
try), a bounded number of times, each pause capped, each retry logged.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from dataclasses import dataclass

log = logging.getLogger("wsched.client")

#: Statuses that mean "not now": the request did not take effect, or may not have.
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, kw_only=True)
class RequestRetry:
    """How a client retries a request the API answered 503 or 429.

    It sends at most ``attempts`` times in all. Between tries it waits what the answer's
    ``Retry-After`` asks, else ``first_delay_s`` doubled each time; never more than
    ``max_delay_s`` at once. ``RequestRetry(attempts=1)`` turns retries off.
    """

    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try too: give 1 or more")

    def delay_s(self, *, status: int, retry_after: str | None, attempt: int) -> float | None:
        """The pause before try ``attempt + 1`` after this answer; None: do not retry."""
        if status not in RETRY_STATUSES or attempt >= self.attempts:
            return None
        asked = parse_retry_after(retry_after)
        wanted = asked if asked is not None else self.first_delay_s * 2 ** (attempt - 1)
        return min(max(wanted, 0.0), self.max_delay_s)


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None  # unreadable: the caller falls back to its own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - (now or dt.datetime.now(dt.UTC))).total_seconds(), 0.0)


def log_retry(method: str, path: str, status: int, delay_s: float, attempt: int) -> None:
    """One line per retry: a silent retry hides an outage from whoever runs the client."""
    log.warning(
        "%s %s answered %d; try %d again in %.1f s", method, path, status, attempt + 1, delay_s
    )
