"""A schedule request as the stored definition, checked with the grain's own rules.

The stored document (``schedules.spec_json``) is what the firing grain reads back through
``ScheduleSpec.from_doc``; building that very spec here is the check, so a definition the
API accepts is one the grain can fire. Each mistake is a 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from actors.pipeline.recurrence import InvalidRecurrence
from actors.pipeline.schedules import ScheduleSpec
from services.api.errors import ApiError
from services.api.limits import Limits
from services.api.schedule_schemas import CatchupIn, CreateSchedule, PatchSchedule
from services.api.submit import compact
from services.api.when import parse_duration, parse_run_at

#: Request fields kept in the stored document as given (for GET), beside their meaning.
_AS_GIVEN = ("cron", "every", "timezone", "start_at", "end_at", "jitter")


def invalid(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_request", f"{field}: {detail}")


def build(
    body: CreateSchedule | PatchSchedule,
    *,
    base: Mapping[str, Any] | None,
    now: dt.datetime,
    limits: Limits,
) -> dict[str, Any]:
    """The stored document for a new schedule, or ``base`` changed by a PATCH body."""
    given = body.model_dump(exclude_unset=True, exclude={"name", "paused"})
    doc: dict[str, Any] = dict(base or {"created_at": now.isoformat()})
    inputs = dict(doc.get("input", {}))
    if "cron" in given or "every" in given:
        inputs.pop("cron", None)
        inputs.pop("every", None)
    inputs.update({key: given[key] for key in _AS_GIVEN if key in given})
    doc["input"] = inputs
    _recurrence(doc, inputs)
    doc["timezone"] = inputs.get("timezone") or "UTC"
    _times(doc, inputs, now=now, limits=limits)
    if "data" in given:
        data = compact(given["data"])
        if len(data) > limits.max_task_data_bytes:
            raise invalid("data", f"{len(data)} bytes; at most {limits.max_task_data_bytes}")
        doc["data_json"] = data.decode()
    doc.setdefault("data_json", "{}")
    for key in ("max_runs", "overlap"):
        if key in given:
            doc[key] = given[key]
    if body.catchup is not None:
        doc["catchup"] = _catchup(body.catchup)
    doc.setdefault("catchup", _catchup(CatchupIn()))
    _check(doc, now=now)
    return doc


def _recurrence(doc: dict[str, Any], inputs: Mapping[str, Any]) -> None:
    cron, every = inputs.get("cron"), inputs.get("every")
    if (cron is None) == (every is None):
        raise invalid("cron", "give cron or every, not both and not neither")
    if cron is not None and cron.strip().lower().startswith("@every"):
        every, cron = cron.strip()[len("@every") :].strip(), None
        if not every:
            raise invalid("cron", "'@every' needs a duration, e.g. '@every 10s'")
    doc.pop("cron", None)
    doc.pop("every_s", None)
    if cron is not None:
        doc["cron"] = cron
        return
    field = "every" if inputs.get("every") is not None else "cron"
    seconds = parse_duration(str(every), field=field).total_seconds()
    if seconds < 1:
        raise invalid(field, "an interval must be at least 1 s")
    doc["every_s"] = seconds


def _times(
    doc: dict[str, Any], inputs: Mapping[str, Any], *, now: dt.datetime, limits: Limits
) -> None:
    horizon = dt.timedelta(seconds=limits.max_schedule_horizon_s)
    start = parse_run_at(inputs["start_at"], field="start_at") if inputs.get("start_at") else None
    end = parse_run_at(inputs["end_at"], field="end_at") if inputs.get("end_at") else None
    if start is not None and start - now > horizon:
        raise invalid("start_at", f"{start.isoformat()} is more than {horizon.days} days ahead")
    if end is not None and start is not None and end <= start:
        raise invalid("end_at", "must be after start_at")
    if end is not None and end <= now:
        raise invalid("end_at", f"{end.isoformat()} has passed: the schedule would never fire")
    doc["start_at"] = start.isoformat() if start else None
    doc["end_at"] = end.isoformat() if end else None
    jitter = inputs.get("jitter")
    doc["jitter_s"] = parse_duration(jitter, field="jitter").total_seconds() if jitter else 0.0
    if doc["jitter_s"] > 86400:
        raise invalid("jitter", "at most one day")


def _catchup(catchup: CatchupIn) -> dict[str, Any]:
    window = parse_duration(catchup.window, field="catchup.window").total_seconds()
    if window > 7 * 86400:
        raise invalid("catchup.window", "at most 7 days")
    return {"window_s": window, "policy": catchup.policy, "after_pause": catchup.after_pause}


def _check(doc: Mapping[str, Any], *, now: dt.datetime) -> None:
    """Build the grain's spec from the document: what it refuses, the API refuses."""
    try:
        spec = ScheduleSpec.from_doc(id="check", name="check", version=1, paused=False, doc=doc)
    except InvalidRecurrence as err:
        field = "timezone" if "time zone" in str(err) else "every" if "every_s" in doc else "cron"
        raise invalid(field, str(err)) from err
    if spec.first_after(now) is None:
        raise invalid("cron", "never fires between now, start_at and end_at")
