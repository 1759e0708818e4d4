"""A pipeline's tasks with the asyncio client: :class:`AsyncTasks`, :class:`AsyncTaskHandle`
(method for method those of ``_sync_tasks``).

A handle's ``wait`` and ``result`` take a ``timeout`` rather than leaving it to
``asyncio.timeout``: the deadline is part of the request, the ``?wait=`` a long poll will
send (see ``_waiting``), which a cancellation from outside cannot tell the server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wsched.client import _task_calls as calls
from wsched.client._calls import stats as stats_call
from wsched.client._errors import NotFound, TaskFailed, TaskTimeout
from wsched.client._events import PipelineEvent, events_path, parse_event, stream_headers
from wsched.client._models import (
    Accepted,
    BatchOutcome,
    BatchResult,
    BulkOutcome,
    Stats,
    Task,
    TaskPage,
    TaskSummary,
)
from wsched.client._options import Duration, Instant, TaskRetry, TaskSpec, new_task_id
from wsched.client._plans import bulk_chunks, encoded_items, merged, spec_of
from wsched.client._waiting import timeout_seconds

if TYPE_CHECKING:
    from wsched.client._async import AsyncClient


class AsyncTasks:
    """The tasks of one pipeline; from :meth:`AsyncClient.tasks`."""

    def __init__(self, client: AsyncClient, app: str, pipeline: str) -> None:
        self._client = client
        self.app = app
        self.pipeline = pipeline

    async def submit(
        self,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        run_at: Instant | None = None,
        delay: Duration | None = None,
        expires_at: Instant | None = None,
        expires_after: Duration | None = None,
        retry: TaskRetry | None = None,
    ) -> AsyncTaskHandle:
        """Submit one task; ``data`` (a JSON object) is sent as compact JSON.

        ``id`` is the idempotency key: submitting it again with the same data answers
        the stored task (the handle's ``existing``), with other data raises
        :class:`Conflict`. Without one, the client picks one, so its own retries after a
        503 never make a second task. ``run_at`` or ``delay`` schedule it for later;
        ``expires_at`` or ``expires_after`` give it a deadline; ``retry`` overrides the
        pipeline's retries for this task.
        """
        spec = TaskSpec(
            data=data,
            id=id,
            run_at=run_at,
            delay=delay,
            expires_at=expires_at,
            expires_after=expires_after,
            retry=retry,
        )
        task_id = spec.id or new_task_id()
        sent = await self._client._send(calls.submit_one(self.app, self.pipeline, spec, task_id))
        return AsyncTaskHandle(self, sent.id, status=sent.status, existing=sent.existing)

    async def submit_many(
        self,
        tasks: Iterable[Mapping[str, Any] | TaskSpec],
        *,
        run_at: Instant | None = None,
        delay: Duration | None = None,
        expires_at: Instant | None = None,
        expires_after: Duration | None = None,
        retry: TaskRetry | None = None,
    ) -> BatchOutcome:
        """Submit many tasks in as few requests as the batch bounds allow.

        Each item is a task's data, or a :class:`TaskSpec` with its own id and options;
        the keyword options apply to the plain data items. Every item gets its id before
        the first request, so a request retried after a 503 or 429 (``Retry-After``
        honoured, bounded by the client's ``retry``) finds what was already taken. The
        outcome has one result per item, in order; ``conflict`` ones are not raised.
        """
        defaults = TaskSpec(
            data={},
            run_at=run_at,
            delay=delay,
            expires_at=expires_at,
            expires_after=expires_after,
            retry=retry,
        )
        items = encoded_items(spec_of(task, defaults) for task in tasks)
        results: list[BatchResult] = []
        for chunk in calls.chunks(
            items, max_items=self._client.batch_items, max_bytes=self._client.batch_bytes
        ):
            results.extend(
                await self._client._send(calls.submit_chunk(self.app, self.pipeline, chunk))
            )
        return calls.outcome(results)

    def handle(self, task_id: str) -> AsyncTaskHandle:
        """A handle on a task submitted earlier, to wait for it or read its result."""
        return AsyncTaskHandle(self, task_id, status=None)

    async def get(self, task_id: str, *, attempts: bool = False) -> Task:
        """The task with its data and result; ``attempts=True`` lists every attempt.

        A task just submitted is :class:`NotFound` until the scheduler admits it
        (normally within a second or two).
        """
        return await self._client._send(
            calls.get(self.app, self.pipeline, task_id, attempts=attempts)
        )

    async def list(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
    ) -> TaskPage:
        """One page of tasks ordered by id; give ``next_cursor`` back for the next (with the
        same filters). ``created_after`` (inclusive) and ``created_before`` (exclusive):
        aware datetimes or RFC 3339 text."""
        return await self._client._send(
            calls.page(
                self.app,
                self.pipeline,
                status=status,
                limit=limit,
                cursor=cursor,
                created_after=created_after,
                created_before=created_before,
            )
        )

    async def iterate(
        self,
        *,
        status: str | None = None,
        page_size: int | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
    ) -> AsyncIterator[TaskSummary]:
        """Every task (of ``status``, created in the range given), page after page, as
        they are read."""
        cursor: str | None = None
        while True:
            page = await self.list(
                status=status,
                limit=page_size,
                cursor=cursor,
                created_after=created_after,
                created_before=created_before,
            )
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, task_id: str) -> Accepted:
        """Cancel a task that has not finished (409 ``task_finished`` if it has)."""
        return await self._client._send(calls.cancel(self.app, self.pipeline, task_id))

    async def requeue(self, task_id: str) -> Accepted:
        """Put a ``dead`` task back in the queue with a fresh attempt count."""
        return await self._client._send(calls.requeue(self.app, self.pipeline, task_id))

    async def cancel_many(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> BulkOutcome:
        """Cancel the ``ids`` given (in requests of 1,000), else the first ``limit`` tasks
        of ``status`` (``queued`` or ``scheduled``)."""
        return await self._bulk("cancel", ids, {"status": status, "limit": limit})

    async def requeue_many(
        self, *, ids: Sequence[str] | None = None, limit: int | None = None
    ) -> BulkOutcome:
        """Requeue the dead ``ids`` given (in requests of 1,000), else the first ``limit``
        dead tasks."""
        return await self._bulk("requeue", ids, {"limit": limit})

    async def events(self, *, last_event_id: str | None = None) -> AsyncIterator[PipelineEvent]:
        """The pipeline's live events: task status changes and counts as they become
        durable, from now (or after ``last_event_id``) on, until the caller stops.

        Reconnects when the API ends a stream, resuming after the last event seen.
        """
        path = events_path(self.app, self.pipeline)
        last = last_event_id
        while True:
            seen, fields = 0, dict[str, str]()
            async for line in self._client._lines(path, stream_headers(last)):
                event = parse_event(fields, line)
                if event is not None:
                    last, seen = event.id or last, seen + 1
                    yield event
            if not seen:
                await self._client.sleep(1.0)  # an API that ends streams at once: no spin

    async def stats(self) -> Stats:
        """Counts by status and the backlog, as the scheduler last flushed them."""
        return await self._client._send(stats_call(self.app, self.pipeline))

    async def _bulk(
        self, verb: str, ids: Sequence[str] | None, extra: dict[str, Any]
    ) -> BulkOutcome:
        answers = [
            await self._client._send(
                calls.bulk(self.app, self.pipeline, verb, ids=part, extra=extra)
            )
            for part in bulk_chunks(ids)
        ]
        return merged(answers)


class AsyncTaskHandle:
    """A submitted task: wait for it, read its result, cancel it.

    ``status`` is what the submit answered (``queued``, ``scheduled``, or the stored
    status when the id existed, then ``existing`` holds the stored task).
    """

    def __init__(
        self, tasks: AsyncTasks, task_id: str, *, status: str | None, existing: Task | None = None
    ) -> None:
        self._tasks = tasks
        self.id = task_id
        self.status = status
        self.existing = existing

    def __repr__(self) -> str:
        return f"AsyncTaskHandle(id={self.id!r}, status={self.status!r})"

    async def get(self, *, attempts: bool = False) -> Task:
        """The task as it stands (:class:`NotFound` until it is admitted)."""
        return await self._tasks.get(self.id, attempts=attempts)

    async def wait(
        self,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109 - see the module docstring
    ) -> Task:
        """Read the task until it has finished, whatever its outcome, and return it.

        ``timeout`` in seconds (or a ``timedelta``; None: as long as it takes); past it,
        :class:`TaskTimeout` (the task goes on). Unknown to the API yet counts as not
        finished: a task is readable once the scheduler has admitted it.
        """
        client = self._tasks._client
        limit = timeout_seconds(timeout)
        ends = math.inf if limit is None else client.clock() + limit
        reads, seen = 0, None
        while True:
            task = await self._read(client.wait_strategy.params(ends - client.clock()))
            reads += 1
            if task is not None and task.finished:
                return task
            seen = task.status if task is not None else seen
            remaining = ends - client.clock()
            if remaining <= 0:
                raise TaskTimeout(self.id, limit or 0.0, seen)
            await client.sleep(client.wait_strategy.pause_s(reads, remaining))

    async def result(
        self,
        timeout: float | dt.timedelta | None = None,  # noqa: ASYNC109 - see the module docstring
    ) -> Any:
        """The task's result once it has succeeded (decoded as ``result_encoding`` says).

        Raises :class:`TaskFailed` (with the final task) if it ended otherwise, and
        :class:`TaskTimeout` if it has not finished within ``timeout``.
        """
        task = await self.wait(timeout)
        if task.status != "succeeded":
            raise TaskFailed(task)
        return task.result

    async def cancel(self) -> Accepted:
        """Cancel the task if it has not finished."""
        return await self._tasks.cancel(self.id)

    async def _read(self, params: dict[str, str]) -> Task | None:
        call = calls.get(self._tasks.app, self._tasks.pipeline, self.id)
        try:
            return await self._tasks._client._send(
                dataclasses.replace(call, params={**call.params, **params})
            )
        except NotFound:
            return None
