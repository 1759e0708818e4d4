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

import msgspec

from actors.pipeline.retry import RetryOverride
from services.api.context import ApiContext, DatabaseUnavailable, in_thread
from services.api.errors import ApiError, unavailable
from services.api.schemas import TASK_ID_RE
from services.kafka.producer import BrokerUnavailable, OutgoingTask
from services.store.control import ExistingTask, Pipeline, PipelineState

log = logging.getLogger("wsched.api.submit")

JSON = "application/json"


@dataclass(frozen=True, kw_only=True)
class Candidate:
    index: int
    id: str
    #: The client named the id (an idempotency key to check), rather than the API.
    client_id: bool = False
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


class Outcome(msgspec.Struct, frozen=True):
    """One batch item's answer, as ``schemas.BatchResult`` documents it (encoded by
    msgspec: a thousand pydantic models per batch cost more than the batch's own work)."""

    id: str
    result: str
    status: str | None
    detail: str | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    produce: list[OutgoingTask]
    results: list[Outcome]


_ENCODER = msgspec.json.Encoder()


def batch_answer(results: Sequence[Outcome]) -> bytes:
    """``schemas.BatchOut``'s JSON for ``results``."""
    counts = {"queued": 0, "existing": 0, "conflict": 0}
    for outcome in results:
        counts[outcome.result] += 1
    return _ENCODER.encode(
        {
            "results": results,
            "queued": counts["queued"],
            "existing": counts["existing"],
            "conflicts": counts["conflict"],
        }
    )


# -- reading a batch's body ------------------------------------------------------------------
#
# Each item's data is carried as the client sent it, as the single submit carries its body:
# msgspec hands out the bytes of each ``data`` value (``msgspec.Raw``) without building
# and re-serialising it. Profiled in-process, a batch of 1,000 spent 13 % of its CPU
# re-serialising data and another 15 % in pydantic.


class PlainItem(msgspec.Struct, forbid_unknown_fields=True):
    data: msgspec.Raw
    id: str | None = None


class _PlainBatch(msgspec.Struct, forbid_unknown_fields=True):
    tasks: list[PlainItem]


class _DataOnly(msgspec.Struct):
    data: msgspec.Raw


class _DataOnlyBatch(msgspec.Struct):
    tasks: list[_DataOnly]


_PLAIN = msgspec.json.Decoder(_PlainBatch)
_DATA_ONLY = msgspec.json.Decoder(_DataOnlyBatch)


def plain_batch(raw: bytes) -> list[PlainItem] | None:
    """The items of a batch in its plain form (each item a data object and perhaps a valid
    id, nothing else), read without pydantic; None for any other body, valid or not, which
    the declared model then validates and answers as it documents."""
    try:
        raw.decode("utf-8")  # msgspec hands out raw values unchecked
        tasks = _PLAIN.decode(raw).tasks
    except (UnicodeDecodeError, msgspec.DecodeError):
        return None
    if not tasks:
        return None
    for item in tasks:
        if not _is_object(item.data):
            return None
        if item.id is not None and not TASK_ID_RE.fullmatch(item.id):
            return None
    return tasks


def item_data(raw: bytes, count: int) -> list[bytes] | None:
    """The bytes of each item's ``data`` in a body the declared model has validated; None
    where msgspec reads it otherwise than Python's parser did (an unpaired surrogate
    escape), for the caller to re-serialise instead."""
    try:
        tasks = _DATA_ONLY.decode(raw).tasks
    except msgspec.DecodeError:
        return None
    if len(tasks) != count:
        return None
    return [bytes(item.data) for item in tasks]


def _is_object(value: msgspec.Raw) -> bool:
    return bytes(memoryview(value)[:1]) == b"{"


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
    """A JSON object re-serialised compactly: ``json.dumps(data, separators=(",", ":"))``
    (UTF-8, no escaping of non-ASCII). A schedule's data, and a batch item's where its
    bytes as sent cannot be carried (see ``item_data``)."""
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except ValueError as err:  # NaN or Infinity, which Python's parser lets through
        raise ApiError(400, "malformed_json", f"task data is not valid JSON: {err}") from err
    except UnicodeEncodeError as err:  # an unpaired surrogate escape (\ud800)
        raise ApiError(
            400, "malformed_json", "task data has an unpaired surrogate escape; send UTF-8 text"
        ) from err


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
    results: list[Outcome] = []
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
            results.append(Outcome(item.id, "queued", status))
        elif stored.data_sha256 == item.sha256:
            results.append(Outcome(item.id, "existing", stored.status))
        else:
            results.append(_conflict(item.id, stored.status, "a stored task"))
    return Plan(produce=produce, results=results)


def _repeat(item: Candidate, earlier: Candidate, earlier_result: Outcome) -> Outcome:
    if item.sha256 == earlier.sha256:
        return earlier_result
    return _conflict(item.id, None, f"tasks[{earlier.index}] of this batch")


def _conflict(task_id: str, status: str | None, holder: str) -> Outcome:
    return Outcome(
        task_id,
        "conflict",
        status,
        f"{holder} has id {task_id!r} with different data; use another id",
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
