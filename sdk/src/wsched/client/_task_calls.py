"""The task operations as values (see ``_calls``), and how a large submit is cut up.

A batch is cut by items (the API's ``WSCHED_MAX_BATCH_ITEMS``, 10,000 by default) and by
bytes (well under its 64 MiB request bound), each item encoded once with its id fixed
before the first request: a chunk sent again after a 503 is the same bytes, so the API
answers ``existing`` for what it had already taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from wsched.client._calls import Call, body_of, pipeline_path, seg
from wsched.client._errors import Conflict
from wsched.client._models import (
    Accepted,
    BatchOutcome,
    BatchResult,
    BulkOutcome,
    Task,
    TaskPage,
)
from wsched.client._options import Instant, TaskSpec, dumps, instant_text

#: The API's default bound on items per batch request.
MAX_BATCH_ITEMS = 10_000
#: Bytes per batch request the client aims under: a quarter of the API's default bound,
#: so one request stays a few seconds of upload on a slow link.
MAX_BATCH_BYTES = 16 * 1024 * 1024
#: Ids one bulk requeue or cancel may name (the API's MAX_BULK_TASKS).
MAX_BULK_TASKS = 1000


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """The answer to a single submit: 202 (taken) or 200 (the id existed, same data)."""

    id: str
    status: str
    #: The stored task, when the id existed already.
    existing: Task | None = None


def _read_submitted(response: httpx.Response) -> Submitted:
    body = body_of(response)
    if response.status_code == 200:
        task = Task.from_json(body)
        return Submitted(id=task.id, status=task.status, existing=task)
    return Submitted(id=body["id"], status=body["status"])


def submit(
    app: str, pipeline: str, *, data: bytes, task_id: str, params: Mapping[str, str]
) -> Call[Submitted]:
    """One task, its data carried byte for byte; its id makes a retry harmless."""
    return Call(
        method="POST",
        path=pipeline_path(app, pipeline),
        params={**params, "id": task_id},
        body=data,
        retryable=True,
        read=_read_submitted,
    )


def submit_one(app: str, pipeline: str, spec: TaskSpec, task_id: str) -> Call[Submitted]:
    """The request for one task: the single-task route, unless the task has its own
    backoff, which only a batch item can carry (then a batch of one, read alike)."""
    if spec.retry is None or spec.retry.backoff is None:
        params = spec.when()
        if spec.retry is not None and spec.retry.max_attempts is not None:
            params["max_attempts"] = str(spec.retry.max_attempts)
        return submit(app, pipeline, data=dumps(dict(spec.data)), task_id=task_id, params=params)
    chunk = submit_chunk(app, pipeline, [dumps(spec.batch_item(task_id))])
    return Call(
        method=chunk.method,
        path=chunk.path,
        body=chunk.body,
        retryable=True,
        read=lambda response: _only(chunk.read(response)[0]),
    )


def _only(result: BatchResult) -> Submitted:
    if result.result == "conflict":
        raise Conflict(status=409, error="task_conflict", detail=result.detail or "")
    return Submitted(id=result.id, status=result.status or "queued")


def submit_chunk(app: str, pipeline: str, items: Sequence[bytes]) -> Call[list[BatchResult]]:
    """One batch request of encoded items (each with its id)."""
    return Call(
        method="POST",
        path=f"{pipeline_path(app, pipeline)}/tasks",
        body=b'{"tasks":[' + b",".join(items) + b"]}",
        retryable=True,
        read=lambda r: [BatchResult.from_json(x) for x in body_of(r)["results"]],
    )


def chunks(items: Iterable[bytes], *, max_items: int, max_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive runs of ``items`` within both bounds (an item alone may exceed
    ``max_bytes``: the API then names it in its 413)."""
    run: list[bytes] = []
    size = 0
    for item in items:
        if run and (len(run) == max_items or size + len(item) + 1 > max_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item) + 1
    if run:
        yield run


def outcome(results: Iterable[BatchResult]) -> BatchOutcome:
    """Every chunk's results as one answer, in order, with the counts."""
    listed = tuple(results)
    return BatchOutcome(
        results=listed,
        queued=sum(r.result == "queued" for r in listed),
        existing=sum(r.result == "existing" for r in listed),
        conflicts=sum(r.result == "conflict" for r in listed),
    )


def get(app: str, pipeline: str, task_id: str, *, attempts: bool = False) -> Call[Task]:
    return Call(
        method="GET",
        path=f"{pipeline_path(app, pipeline)}/tasks/{seg(task_id)}",
        params={"attempts": "true"} if attempts else {},
        retryable=True,
        read=lambda r: Task.from_json(body_of(r)),
    )


def page(
    app: str,
    pipeline: str,
    *,
    status: str | None,
    limit: int | None,
    cursor: str | None,
    created_after: Instant | None = None,
    created_before: Instant | None = None,
) -> Call[TaskPage]:
    given = {
        "status": status,
        "limit": None if limit is None else str(limit),
        "cursor": cursor,
        "created_after": None if created_after is None else instant_text(created_after),
        "created_before": None if created_before is None else instant_text(created_before),
    }
    return Call(
        method="GET",
        path=f"{pipeline_path(app, pipeline)}/tasks",
        params={k: v for k, v in given.items() if v is not None},
        retryable=True,
        read=lambda r: TaskPage.from_json(body_of(r)),
    )


def cancel(app: str, pipeline: str, task_id: str) -> Call[Accepted]:
    return Call(
        method="DELETE",
        path=f"{pipeline_path(app, pipeline)}/tasks/{seg(task_id)}",
        read=lambda r: Accepted.from_json(body_of(r)),
    )


def requeue(app: str, pipeline: str, task_id: str) -> Call[Accepted]:
    return Call(
        method="POST",
        path=f"{pipeline_path(app, pipeline)}/tasks/{seg(task_id)}/requeue",
        read=lambda r: Accepted.from_json(body_of(r)),
    )


def bulk(
    app: str, pipeline: str, verb: str, *, ids: Sequence[str] | None, extra: Mapping[str, Any]
) -> Call[BulkOutcome]:
    """``tasks:requeue`` or ``tasks:cancel``; repeating one is harmless (a task no longer
    dead or still open is skipped), so it is retried like a read."""
    body: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if ids is not None:
        body["ids"] = list(ids)
    return Call(
        method="POST",
        path=f"{pipeline_path(app, pipeline)}/tasks:{verb}",
        body=dumps(body),
        retryable=True,
        read=lambda r: BulkOutcome.from_json(body_of(r)),
    )
