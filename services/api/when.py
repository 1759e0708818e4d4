"""When a submitted task becomes due: ``run_at`` or ``delay``, checked at the door.

A bad time is the client's mistake and answers 422 naming the field, before anything is
produced: a task that would wait for a year and a day, or forever, is refused rather than
kept. A ``run_at`` in the past is not a mistake (clocks differ, retries happen): it runs
now.
"""

from __future__ import annotations

import datetime as dt
import re

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from services.api.errors import ApiError

#: Go-style durations: ``90s``, ``15m``, ``2h``, ``1h30m``, ``1.5h``, ``250ms``, ``7d``.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ISO_DURATION: TypeAdapter[dt.timedelta] = TypeAdapter(dt.timedelta)
_RFC3339: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)
#: Longer inputs are refused before any parsing.
_MAX_TEXT = 64


def _invalid(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {detail}")


def parse_duration(text: str, *, field: str) -> dt.timedelta:
    """A duration such as ``90s``, ``15m``, ``1h30m`` or ISO 8601 ``PT15M``; never negative."""
    value = text.strip()
    if not value or len(value) > _MAX_TEXT:
        raise _invalid(field, "give a duration such as '90s', '15m', '2h' or 'PT15M'")
    if value.upper().startswith(("P", "-P")):
        try:
            parsed = _ISO_DURATION.validate_python(value.upper())
        except ValidationError as err:
            raise _invalid(field, f"{value!r} is not an ISO 8601 duration") from err
    else:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise _invalid(
                field, f"{value!r} is not a duration: use e.g. '90s', '15m', '1h30m', 'PT15M'"
            )
        parsed = dt.timedelta(seconds=sum(float(n) * _SECONDS[u] for n, u in parts))
    if parsed < dt.timedelta(0):
        raise _invalid(field, f"{value!r} is negative; a delay counts forward from now")
    return parsed


def parse_run_at(text: str, *, field: str) -> dt.datetime:
    """An RFC 3339 time with its UTC offset (``2026-11-26T12:00:00Z``, ``...+01:00``)."""
    if len(text) > _MAX_TEXT:
        raise _invalid(field, "give an RFC 3339 time such as '2026-11-26T12:00:00Z'")
    try:
        value: dt.datetime = _RFC3339.validate_python(text)
    except ValidationError as err:
        raise _invalid(
            field,
            f"{text!r} is not an RFC 3339 time with an offset, e.g. '2026-11-26T12:00:00Z'",
        ) from err
    return value.astimezone(dt.UTC)


def due_at(
    *,
    run_at: str | None,
    delay: str | None,
    now: dt.datetime,
    max_horizon: dt.timedelta,
    where: str = "",
) -> dt.datetime | None:
    """The task's due time, or None for now. ``where`` prefixes field names (``tasks[3].``)."""
    if run_at is not None and delay is not None:
        raise _invalid(f"{where}run_at", "give run_at or delay, not both")
    if run_at is not None:
        due = parse_run_at(run_at, field=f"{where}run_at")
        field = f"{where}run_at"
    elif delay is not None:
        due = now + parse_duration(delay, field=f"{where}delay")
        field = f"{where}delay"
    else:
        return None
    if due - now > max_horizon:
        raise _invalid(
            field,
            f"{due.isoformat()} is more than {_human(max_horizon)} ahead "
            "(the operator's WSCHED_MAX_SCHEDULE_HORIZON_S); schedule it closer",
        )
    return due if due > now else None


def deadline(
    *,
    expires_at: str | None,
    expires_after: str | None,
    now: dt.datetime,
    due: dt.datetime | None,
    max_horizon: dt.timedelta,
    where: str = "",
) -> dt.datetime | None:
    """The task's deadline, or None; refused when it could never be met."""
    if expires_at is not None and expires_after is not None:
        raise _invalid(f"{where}expires_at", "give expires_at or expires_after, not both")
    if expires_at is not None:
        field = f"{where}expires_at"
        value = parse_run_at(expires_at, field=field)
    elif expires_after is not None:
        field = f"{where}expires_after"
        span = parse_duration(expires_after, field=field)
        if span <= dt.timedelta(0):
            raise _invalid(field, "a deadline needs a positive duration")
        value = now + span
    else:
        return None
    if value <= now:
        raise _invalid(field, f"{value.isoformat()} has passed: the task could never start")
    if due is not None and value <= due:
        raise _invalid(field, f"{value.isoformat()} is not after the task's due time")
    if value - now > max_horizon:
        raise _invalid(field, f"{value.isoformat()} is more than {_human(max_horizon)} ahead")
    return value


def _human(span: dt.timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds():g} s"


def cutoff(older_than: str, *, now: dt.datetime, field: str = "older_than") -> dt.datetime:
    """A purge's cutoff: an RFC 3339 time as given, or a duration counted back from now.
    A time in the future is refused: it would purge tasks that are not old at all."""
    text = older_than.strip()
    if _looks_like_time(text):
        value = parse_run_at(text, field=field)
        if value > now:
            raise _invalid(field, f"{value.isoformat()} is in the future: give a past time")
        return value
    try:
        return now - parse_duration(text, field=field)
    except ApiError:
        raise _invalid(
            field,
            f"{text[:_MAX_TEXT]!r} is neither a duration ('7d', '12h', 'PT1H') nor an "
            "RFC 3339 time ('2026-11-01T00:00:00Z')",
        ) from None


def _looks_like_time(text: str) -> bool:
    """``2026-11-01T...`` rather than ``7d``: a date starts with four digits and a dash."""
    return len(text) >= 5 and text[:4].isdigit() and text[4] == "-"
