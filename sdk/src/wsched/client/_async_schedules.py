"""A pipeline's schedules with the asyncio client: :class:`AsyncSchedules` and
:class:`AsyncScheduleRunHandle` (method for method those of ``_sync_schedules``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from wsched.client import _schedule_calls as calls
from wsched.client._async_tasks import AsyncTaskHandle, AsyncTasks
from wsched.client._models import Json
from wsched.client._options import Duration, Instant
from wsched.client._schedule_calls import Catchup, schedule_fields
from wsched.client._schedule_models import Backfilled, Schedule, SchedulePage, ScheduleRun

if TYPE_CHECKING:
    import datetime as dt

    from wsched.client._async import AsyncClient


class AsyncSchedules:
    """The schedules of one pipeline; from :meth:`AsyncClient.schedules`.

    Each run of a schedule is an ordinary task of the pipeline, its id
    ``<schedule id>@<nominal fire time>``: read it with :meth:`AsyncClient.tasks`.
    """

    def __init__(self, client: AsyncClient, app: str, pipeline: str) -> None:
        self._client = client
        self.app = app
        self.pipeline = pipeline

    async def create(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str | None = None,
        start_at: Instant | None = None,
        end_at: Instant | None = None,
        jitter: Duration | None = None,
        data: Mapping[str, Any] | None = None,
        max_runs: int | None = None,
        overlap: str | None = None,
        catchup: Catchup | None = None,
        paused: bool = False,
    ) -> Schedule:
        """Create a schedule firing at ``cron`` (in ``timezone``, default UTC) or ``every``
        interval (one of them), between ``start_at`` and ``end_at``.

        Each run is a task with ``data``, delayed by up to ``jitter``; ``max_runs`` ends the
        schedule, ``overlap`` (``allow``, ``skip``, ``buffer_one``) says what happens while
        the previous run goes on, ``catchup`` what becomes of fire times missed.
        ``paused=True`` creates it paused. Times are aware datetimes or RFC 3339 text (a
        naive datetime raises ``ValueError``); a field the API refuses is a 422
        (:class:`InvalidRequest`) naming it, a name in use a 409 ``name_taken``.
        """
        fields = schedule_fields(
            cron=cron,
            every=every,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            jitter=jitter,
            data=data,
            max_runs=max_runs,
            overlap=overlap,
            catchup=catchup,
            paused=paused or None,
        )
        return await self._client._send(
            calls.create(self.app, self.pipeline, {"name": name, **fields})
        )

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> SchedulePage:
        """One page of schedules by name; give ``next_cursor`` back for the next."""
        return await self._client._send(
            calls.page(self.app, self.pipeline, limit=limit, cursor=cursor)
        )

    async def iterate(self, *, page_size: int | None = None) -> AsyncIterator[Schedule]:
        """Every schedule of the pipeline, page after page, as they are read."""
        cursor: str | None = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor)
            for schedule in page.schedules:
                yield schedule
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, name: str) -> Schedule:
        """One schedule with its next fire times, last runs and counts."""
        return await self._client._send(calls.get(self.app, self.pipeline, name))

    async def update(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str | None = None,
        start_at: Instant | None = None,
        end_at: Instant | None = None,
        jitter: Duration | None = None,
        data: Mapping[str, Any] | None = None,
        max_runs: int | None = None,
        overlap: str | None = None,
        catchup: Catchup | None = None,
        paused: bool | None = None,
    ) -> Schedule:
        """Change what is given (see :meth:`create`); a new ``cron`` or ``every`` replaces
        the other and applies from now."""
        changes = schedule_fields(
            cron=cron,
            every=every,
            timezone=timezone,
            start_at=start_at,
            end_at=end_at,
            jitter=jitter,
            data=data,
            max_runs=max_runs,
            overlap=overlap,
            catchup=catchup,
            paused=paused,
        )
        return await self._client._send(calls.update(self.app, self.pipeline, name, changes))

    async def pause(self, name: str) -> Schedule:
        """Stop firing until resumed; runs already made go on."""
        return await self._client._send(
            calls.set_paused(self.app, self.pipeline, name, paused=True)
        )

    async def resume(self, name: str) -> Schedule:
        """Fire again from the next fire time (the paused ones are caught up only with
        ``Catchup(after_pause=True)``)."""
        return await self._client._send(
            calls.set_paused(self.app, self.pipeline, name, paused=False)
        )

    async def trigger(self, name: str) -> AsyncScheduleRunHandle:
        """One run now, whatever the schedule's times (also while paused); the handle
        waits for it like a task's (``.result(timeout=60)``). The pipeline must be ready.
        Not retried after a 503: a second trigger would be a second run."""
        sent = await self._client._send(calls.trigger(self.app, self.pipeline, name))
        tasks = AsyncTasks(self._client, self.app, self.pipeline)
        return AsyncScheduleRunHandle(
            tasks, sent.id, status=sent.status, fire_at=sent.fire_at, raw=sent.raw
        )

    async def backfill(self, name: str, *, start: Instant, end: Instant) -> Backfilled:
        """Run now every fire time of the schedule in ``[start, end]`` (at most 1,000);
        a fire time that ran already is not run again."""
        return await self._client._send(
            calls.backfill(self.app, self.pipeline, name, start=start, end=end)
        )

    async def runs(
        self,
        name: str,
        *,
        at: Instant | None = None,
        before: Instant | None = None,
        limit: int | None = None,
    ) -> tuple[ScheduleRun, ...]:
        """The schedule's runs, latest first (those fired ``before`` a time, if given);
        ``at`` finds the run of one nominal fire time (none if it has not run)."""
        return await self._client._send(
            calls.runs(self.app, self.pipeline, name, at=at, before=before, limit=limit)
        )

    async def delete(self, name: str) -> None:
        """Delete the schedule; its runs stay as tasks. A schedule created again under the
        name is a new one (a new id, so new run ids)."""
        await self._client._send(calls.delete(self.app, self.pipeline, name))


class AsyncScheduleRunHandle(AsyncTaskHandle):
    """The run a trigger made: a task handle (``wait``, ``result``, ``cancel``) that also
    knows the nominal fire time it stands for."""

    def __init__(
        self,
        tasks: AsyncTasks,
        task_id: str,
        *,
        status: str | None,
        fire_at: dt.datetime,
        raw: Json,
    ) -> None:
        super().__init__(tasks, task_id, status=status)
        self.fire_at = fire_at
        self.raw = raw

    def __repr__(self) -> str:
        return f"AsyncScheduleRunHandle(id={self.id!r}, fire_at={self.fire_at.isoformat()!r})"
