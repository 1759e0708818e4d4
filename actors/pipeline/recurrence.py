"""When a schedule fires: cron expressions and fixed intervals, in a time zone.

Cron expressions are evaluated by ``cronsim`` (Healthchecks' cron evaluator: it follows
Debian cron closely, takes the 6-field form with a leading seconds field, and works with
``zoneinfo``). Two things are ours, because users expect them of a scheduler and cronsim
leaves them out: the ``@hourly``-style macros and ``@every <duration>`` (mapped here), and
one daylight-saving rule applied to 5- and 6-field expressions alike (cronsim applies it to
5-field ones only):

- An expression with a fixed minute and hour (``30 2 * * *``) names a wall-clock time. A
  wall-clock time that occurs twice (clocks go back) fires once, at its first occurrence;
  one that does not occur (clocks go forward) fires at the first instant after the gap.
- An expression with a wildcard or step in its minute or hour (``*/15 * * * *``) names
  real time: it fires every 15 real minutes, through the repeated hour too.

Every fire time is an aware UTC datetime with whole seconds, so that it can name a run
(``<schedule id>@<fire time>``) the same way on every replica.

Pure: no clock, no I/O. Callers pass the time in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: The shortest interval a schedule may have.
MIN_EVERY_S = 1.0
#: The longest, so that arithmetic on fire times stays inside ``datetime``'s range.
MAX_EVERY_S = 366 * 86400.0


class InvalidRecurrence(ValueError):
    """A cron expression, interval or time zone that cannot be evaluated."""


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or InvalidRecurrence naming what is wrong."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidRecurrence(f"unknown time zone {name!r}: give an IANA name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise InvalidRecurrence(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris'"
        ) from err


def whole_second(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, kw_only=True)
class Every:
    """Fire times ``anchor + k * every_s`` for whole k (the anchor is a fire time)."""

    every_s: float
    anchor: dt.datetime

    def __post_init__(self) -> None:
        if not math.isfinite(self.every_s) or not MIN_EVERY_S <= self.every_s <= MAX_EVERY_S:
            raise InvalidRecurrence(
                f"an interval must be between {MIN_EVERY_S:g} s and {MAX_EVERY_S:g} s"
            )

    def after(self, at: dt.datetime) -> dt.datetime:
        if at < self.anchor:
            return self.anchor
        steps = math.floor((at - self.anchor).total_seconds() / self.every_s) + 1
        fire = self.anchor + dt.timedelta(seconds=steps * self.every_s)
        while fire <= at:  # floating point may land a step short
            steps += 1
            fire = self.anchor + dt.timedelta(seconds=steps * self.every_s)
        return whole_second(fire) if fire.microsecond == 0 else fire

    def count(self, start: dt.datetime, end: dt.datetime, *, cap: int) -> int:
        """Fire times in ``[start, end)``."""
        if end <= start:
            return 0
        first = start if self._is_fire(start) else self.after(start)
        if first >= end:
            return 0
        return min(cap, math.ceil((end - first).total_seconds() / self.every_s))

    def _is_fire(self, at: dt.datetime) -> bool:
        if at < self.anchor:
            return False
        return math.isclose(((at - self.anchor).total_seconds() / self.every_s) % 1, 0)


@dataclass(frozen=True, kw_only=True)
class Cron:
    """A cron expression in a time zone (see the module docstring for the DST rule)."""

    expression: str
    tz: ZoneInfo

    @classmethod
    def parse(cls, expression: str, tz: ZoneInfo) -> Cron:
        text = " ".join(expression.split())
        text = MACROS.get(text.lower(), text)
        if text.startswith("@"):
            raise InvalidRecurrence(
                f"unknown macro {expression!r}: use {', '.join(MACROS)} or '@every <duration>'"
            )
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise InvalidRecurrence(
                f"{expression!r} has {len(fields)} fields: give 5 (minute hour day month "
                "weekday) or 6 (a leading seconds field)"
            )
        cron = cls(expression=text, tz=tz)
        try:
            CronSim(text, dt.datetime(2026, 1, 1))
        except CronSimError as err:
            raise InvalidRecurrence(f"{expression!r} is not a cron expression: {err}") from err
        if cron.after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) is None:
            raise InvalidRecurrence(f"{expression!r} never fires")
        return cron

    @property
    def _wall_clock(self) -> bool:
        """A fixed minute and hour name a wall-clock time (Debian cron's distinction)."""
        fields = self.expression.split(" ")
        minute, hour = fields[-5], fields[-4]
        return not (minute.startswith("*") or hour.startswith("*") or "/" in minute + hour)

    def after(self, at: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``at``; None if none in the next 50 years."""
        try:
            if self._wall_clock:
                return self._after_wall_clock(at)
            local = at.astimezone(self.tz)
            return next(CronSim(self.expression, local)).astimezone(dt.UTC)
        except StopIteration:
            return None

    def _after_wall_clock(self, at: dt.datetime) -> dt.datetime:
        naive = at.astimezone(self.tz).replace(tzinfo=None)
        times = CronSim(self.expression, naive)
        while True:
            fire = self._instant(next(times))
            if fire > at:
                return fire

    def _instant(self, naive: dt.datetime) -> dt.datetime:
        """A local wall-clock time as an instant: its first occurrence, or, in a gap, the
        first instant after the gap."""
        while True:
            local = naive.replace(tzinfo=self.tz, fold=0)
            utc = local.astimezone(dt.UTC)
            if utc.astimezone(self.tz).replace(tzinfo=None) == naive:
                return utc
            naive = (naive + dt.timedelta(minutes=1)).replace(second=0)

    def count(self, start: dt.datetime, end: dt.datetime, *, cap: int) -> int:
        """Fire times in ``[start, end)``, counted up to ``cap``."""
        seen = 0
        fire = self.after(start - dt.timedelta(seconds=1))
        while fire is not None and fire < end and seen < cap:
            seen += 1
            fire = self.after(fire)
        return seen


Recurrence = Every | Cron


def recurrence(
    *, cron: str | None, every_s: float | None, timezone: str, anchor: dt.datetime
) -> Recurrence:
    """The recurrence a schedule describes; exactly one of ``cron`` and ``every_s``."""
    if (cron is None) == (every_s is None):
        raise InvalidRecurrence("give cron or every, not both and not neither")
    if cron is None:
        return Every(every_s=float(every_s or 0), anchor=whole_second(anchor))
    return Cron.parse(cron, zone(timezone))


def upcoming(rule: Recurrence, *, after: dt.datetime, count: int) -> Iterator[dt.datetime]:
    """The next ``count`` fire times after ``after``."""
    at: dt.datetime | None = after
    for _ in range(count):
        at = rule.after(at) if at is not None else None
        if at is None:
            return
        yield at
