"""A pipeline's tasks with the blocking client: :class:`Tasks` and :class:`TaskHandle`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from wsched.client import _task_calls as calls
from wsched.client._calls import stats as stats_call
from wsched.client._errors import NotFound, TaskFailed, TaskTimeout
from wsched.client._events import PipelineEvent, events_path, parse_lines, stream_headers
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
    from wsched.client._sync import Client


class Tasks:
    """The tasks of one pipeline; from :meth:`Client.tasks`."""

    def __init__(self, client: Client, app: str, pipeline: str) -> None:
        self._client = client
        self.app = app
        self.pipeline = pipeline

    def submit(
        self,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        run_at: Instant | None = None,
        delay: Duration | None = None,
        expires_at: Instant | None = None,
        expires_after: Duration | None = None,
        retry: TaskRetry | None = None,
    ) -> TaskHandle:
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
        sent = self._client._send(calls.submit_one(self.app, self.pipeline, spec, task_id))
        return TaskHandle(self, sent.id, status=sent.status, existing=sent.existing)

    def submit_many(
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
            results.extend(self._client._send(calls.submit_chunk(self.app, self.pipeline, chunk)))
        return calls.outcome(results)

    def handle(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier, to wait for it or read its result."""
        return TaskHandle(self, task_id, status=None)

    def get(self, task_id: str, *, attempts: bool = False) -> Task:
        """The task with its data and result; ``attempts=True`` lists every attempt.

        A task just submitted is :class:`NotFound` until the scheduler admits it
        (normally within a second or two).
        """
        return self._client._send(calls.get(self.app, self.pipeline, task_id, attempts=attempts))

    def list(
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
        return self._client._send(
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

    def iterate(
        self,
        *,
        status: str | None = None,
        page_size: int | None = None,
        created_after: Instant | None = None,
        created_before: Instant | None = None,
    ) -> Iterator[TaskSummary]:
        """Every task (of ``status``, created in the range given), page after page, as
        they are read."""
        cursor: str | None = None
        while True:
            page = self.list(
                status=status,
                limit=page_size,
                cursor=cursor,
                created_after=created_after,
                created_before=created_before,
            )
            yield from page.tasks
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, task_id: str) -> Accepted:
        """Cancel a task that has not finished (409 ``task_finished`` if it has)."""
        return self._client._send(calls.cancel(self.app, self.pipeline, task_id))

    def requeue(self, task_id: str) -> Accepted:
        """Put a ``dead`` task back in the queue with a fresh attempt count."""
        return self._client._send(calls.requeue(self.app, self.pipeline, task_id))

    def cancel_many(
        self,
        *,
        ids: Sequence[str] | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> BulkOutcome:
        """Cancel the ``ids`` given (in requests of 1,000), else the first ``limit`` tasks
        of ``status`` (``queued`` or ``scheduled``)."""
        return self._bulk("cancel", ids, {"status": status, "limit": limit})

    def requeue_many(
        self, *, ids: Sequence[str] | None = None, limit: int | None = None
    ) -> BulkOutcome:
        """Requeue the dead ``ids`` given (in requests of 1,000), else the first ``limit``
        dead tasks."""
        return self._bulk("requeue", ids, {"limit": limit})

    def events(self, *, last_event_id: str | None = None) -> Iterator[PipelineEvent]:
        """The pipeline's live events: task status changes and counts as they become
        durable, from now (or after ``last_event_id``) on, until the caller stops.

        Reconnects when the API ends a stream, resuming after the last event seen.
        """
        path = events_path(self.app, self.pipeline)
        last = last_event_id
        while True:
            seen = 0
            for event in parse_lines(self._client._lines(path, stream_headers(last))):
                last, seen = event.id or last, seen + 1
                yield event
            if not seen:
                self._client.sleep(1.0)  # an API that ends streams at once: do not spin

    def stats(self) -> Stats:
        """Counts by status and the backlog, as the scheduler last flushed them."""
        return self._client._send(stats_call(self.app, self.pipeline))

    def _bulk(self, verb: str, ids: Sequence[str] | None, extra: dict[str, Any]) -> BulkOutcome:
        answers = [
            self._client._send(calls.bulk(self.app, self.pipeline, verb, ids=part, extra=extra))
            for part in bulk_chunks(ids)
        ]
        return merged(answers)


class TaskHandle:
    """A submitted task: wait for it, read its result, cancel it.

    ``status`` is what the submit answered (``queued``, ``scheduled``, or the stored
    status when the id existed, then ``existing`` holds the stored task).
    """

    def __init__(
        self, tasks: Tasks, task_id: str, *, status: str | None, existing: Task | None = None
    ) -> None:
        self._tasks = tasks
        self.id = task_id
        self.status = status
        self.existing = existing

    def __repr__(self) -> str:
        return f"TaskHandle(id={self.id!r}, status={self.status!r})"

    def get(self, *, attempts: bool = False) -> Task:
        """The task as it stands (:class:`NotFound` until it is admitted)."""
        return self._tasks.get(self.id, attempts=attempts)

    def wait(self, timeout: float | dt.timedelta | None = None) -> Task:
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
            task = self._read(client.wait_strategy.params(ends - client.clock()))
            reads += 1
            if task is not None and task.finished:
                return task
            seen = task.status if task is not None else seen
            remaining = ends - client.clock()
            if remaining <= 0:
                raise TaskTimeout(self.id, limit or 0.0, seen)
            client.sleep(client.wait_strategy.pause_s(reads, remaining))

    def result(self, timeout: float | dt.timedelta | None = None) -> Any:
        """The task's result once it has succeeded (decoded as ``result_encoding`` says).

        Raises :class:`TaskFailed` (with the final task) if it ended otherwise, and
        :class:`TaskTimeout` if it has not finished within ``timeout``.
        """
        task = self.wait(timeout)
        if task.status != "succeeded":
            raise TaskFailed(task)
        return task.result

    def cancel(self) -> Accepted:
        """Cancel the task if it has not finished."""
        return self._tasks.cancel(self.id)

    def _read(self, params: dict[str, str]) -> Task | None:
        call = calls.get(self._tasks.app, self._tasks.pipeline, self.id)
        try:
            return self._tasks._client._send(
                dataclasses.replace(call, params={**call.params, **params})
            )
        except NotFound:
            return None
