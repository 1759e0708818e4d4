"""Task submission: validating data, idempotency against stored tasks, producing.

A client-supplied id is an idempotency key scoped to the pipeline. The check here runs
against tasks already admitted to the database; a resubmit that races with the first
submit's admission is still caught by the grain, which keeps the first (the primary key).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.pipeline.retry import RetryOverride
from services.api.context import ApiContext, DatabaseUnavailable, in_thread
from services.api.errors import ApiError, unavailable
from services.api.schemas import BatchResult
from services.kafka.producer import BrokerUnavailable, OutgoingTask
from services.store.control import ExistingTask, Pipeline, PipelineState

log = logging.getLogger("wsched.api.submit")


@dataclass(frozen=True, kw_only=True)
class Candidate:
    index: int
    id: str
    data: bytes
    sha256: bytes
    #: When the task becomes due, in ms since the epoch; 0: now.
    due_at_ms: int = 0
    #: Its deadline in ms since the epoch; 0: none.
    expires_at_ms: int = 0
    #: Its own retry policy; None: the pipeline's.
    retry: RetryOverride | None = None
    #: Its own execution timeout; None: the pipeline's.
    execution_timeout_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    produce: list[OutgoingTask]
    results: list[BatchResult]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(raw: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Check that ``raw`` is one JSON object within the size limit (raw stays as sent)."""
    if len(raw) > max_bytes:
        raise data_too_large(len(raw), max_bytes)
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise ApiError(
            400, "malformed_json", f"the body is not UTF-8 ({err}); send UTF-8 JSON"
        ) from err
    except ValueError as err:
        raise ApiError(
            400, "malformed_json", f"the body is not valid JSON ({err}); fix and resend"
        ) from err
    if not isinstance(value, dict):
        raise ApiError(
            422,
            "invalid_request",
            f"the task's data must be a JSON object, not {type(value).__name__}",
        )
    return value


def compact(data: Mapping[str, Any]) -> bytes:
    """One batch item's data, re-serialised compactly.

    The batch body is parsed as a whole, so an item's original bytes are not at hand:
    its data is written as ``json.dumps(data, separators=(",", ":"))`` (UTF-8, no
    escaping of non-ASCII). The single-task route carries the raw body unchanged.
    """
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as err:  # NaN or Infinity, which Python's parser lets through
        raise ApiError(400, "malformed_json", f"task data is not valid JSON: {err}") from err
    return text.encode()


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def data_too_large(size: int, limit: int, *, index: int | None = None) -> ApiError:
    which = "the task's data" if index is None else f"tasks[{index}].data"
    return ApiError(
        413,
        "data_too_large",
        f"{which} is {size} bytes, over the limit of {limit}; store large inputs elsewhere "
        "and pass a reference",
    )


def require_ready(pipeline: Pipeline) -> None:
    if pipeline.state is PipelineState.READY:
        return
    reason = f" ({pipeline.state_reason})" if pipeline.state_reason else ""
    hint = {
        PipelineState.PROVISIONING: "retry once it is ready",
        PipelineState.FAILED: "fix it with PATCH, then retry once it is ready",
    }.get(pipeline.state, "it cannot take tasks")
    raise ApiError(
        409,
        "pipeline_not_ready",
        f"pipeline {pipeline.name!r} is {pipeline.state.value}{reason}; {hint}",
    )


async def existing_tasks(
    ctx: ApiContext, pipeline: Pipeline, ids: Sequence[str]
) -> dict[str, ExistingTask]:
    """Stored tasks among ``ids``. With the database down, none: the submit goes on to
    Kafka, and the grain keeps the first of two submits with the same id at admission.

    One id (a single submit) is read with the other single submits' ids asked for at the
    same time, one statement per pipeline (``ctx.existing_reads``): under a thousand
    single submits a second, a statement each queued behind the API's few threads."""
    if not ids:
        return {}
    try:
        if len(ids) == 1:
            found = await ctx.existing_reads.read(pipeline.id, ids[0])
            return {} if found is None else {ids[0]: found}
        return await in_thread(ctx.store.existing_tasks, pipeline_id=pipeline.id, ids=ids)
    except DatabaseUnavailable as err:
        log.warning("idempotency check skipped for pipeline %s: %s", pipeline.id, err)
        return {}


def plan(candidates: Sequence[Candidate], existing: Mapping[str, ExistingTask]) -> Plan:
    """One result per item; repeated ids in the batch collapse onto their first item."""
    first: dict[str, int] = {}
    produce: list[OutgoingTask] = []
    results: list[BatchResult] = []
    for item in candidates:
        if item.id in first:
            results.append(_repeat(item, candidates[first[item.id]], results[first[item.id]]))
            continue
        first[item.id] = item.index
        stored = existing.get(item.id)
        if stored is None:
            produce.append(
                OutgoingTask(
                    id=item.id,
                    data=item.data,
                    data_sha256=item.sha256,
                    due_at_ms=item.due_at_ms,
                    expires_at_ms=item.expires_at_ms,
                    retry=item.retry,
                    execution_timeout_s=item.execution_timeout_s,
                )
            )
            status = "scheduled" if item.due_at_ms else "queued"
            results.append(BatchResult(id=item.id, result="queued", status=status))
        elif stored.data_sha256 == item.sha256:
            results.append(BatchResult(id=item.id, result="existing", status=stored.status))
        else:
            results.append(_conflict(item.id, stored.status, "a stored task"))
    return Plan(produce=produce, results=results)


def _repeat(item: Candidate, earlier: Candidate, earlier_result: BatchResult) -> BatchResult:
    if item.sha256 == earlier.sha256:
        return earlier_result
    return _conflict(item.id, None, f"tasks[{earlier.index}] of this batch")


def _conflict(task_id: str, status: str | None, holder: str) -> BatchResult:
    return BatchResult(
        id=task_id,
        result="conflict",
        status=status,
        detail=f"{holder} has id {task_id!r} with different data; use another id",
    )


async def produced(ctx: ApiContext, call: Awaitable[None]) -> None:
    """Await a produce; a broker that does not acknowledge in time is a 503."""
    try:
        await call
    except BrokerUnavailable as err:
        ctx.metrics.broker_unavailable.inc()
        raise unavailable(
            "broker_unavailable",
            f"Kafka did not acknowledge in time ({err}). The request may or may not have "
            "taken effect: retry after Retry-After seconds, with the same task ids",
            retry_after_s=ctx.limits.retry_after_s,
        ) from err
