"""The gRPC worker API: Poll, Heartbeat and Report, translated to and from the grain.

Protobuf <-> domain conversion happens here and nowhere else. Workers authenticate with
their pipeline's worker token; a replica that does not own the pipeline redirects them.

Every string and repeated field is bounded here, before anything reaches the grain: a
value the store cannot hold would otherwise fail the grain's next flush, for every worker
of the pipeline. Failures answer without their text (which may hold SQL, parameters or
paths), under an incident id that the log line carries too.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

import grpc

from actors.pipeline.model import (
    Grant,
    InvalidToken,
    LeaseToken,
    Outcome,
    ReportAck,
    Verdict,
)
from actors.pipeline.model import (
    Report as TaskReport,
)
from actors.pipeline.ports import StaleEpoch, StoreUnavailable
from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.observability.tracing import OFF, Tracing
from services.scheduler.tracing import mark_dispatched

log = logging.getLogger("wsched.scheduler.worker_api")
T = TypeVar("T")

OWNER_KEY = "wsched-owner"
RETRY_AFTER_KEY = "retry-after-ms"

_VERDICTS = {
    Verdict.OK: worker_pb2.VERDICT_OK,
    Verdict.CANCELLED: worker_pb2.VERDICT_CANCELLED,
    Verdict.LEASE_LOST: worker_pb2.VERDICT_LEASE_LOST,
}
_ACKS = {
    ReportAck.ACCEPTED: worker_pb2.ACK_ACCEPTED,
    ReportAck.DUPLICATE: worker_pb2.ACK_DUPLICATE,
    ReportAck.STALE: worker_pb2.ACK_STALE,
}
_OUTCOMES = {
    worker_pb2.OUTCOME_SUCCEEDED: Outcome.SUCCEEDED,
    worker_pb2.OUTCOME_FAILED: Outcome.FAILED,
    worker_pb2.OUTCOME_CANCELLED: Outcome.CANCELLED,
}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What the worker API accepts; ``protos/wsched/v1/worker.proto`` documents each.

    Poll's numbers are capped; an over-long string or list is INVALID_ARGUMENT naming the
    field; a result over its bound is REJECTED alone; an error over its bound is cut.
    """

    max_tasks: int = 1000
    #: Below gRPC's default 4 MiB message limit, with room for the envelope.
    max_bytes: int = 3 * 1024 * 1024
    max_wait_ms: int = 30_000
    max_result_bytes: int = 256 * 1024
    #: Longer errors keep their last characters (where a failure's cause is): refusing
    #: them would lose the task's outcome. Even at 4 bytes a character they fit the
    #: 65,535-byte TEXT column.
    max_error_chars: int = 8192
    #: Pipeline ids are UUIDs (the ``pipelines.id`` column).
    max_pipeline_id_chars: int = 36
    #: The ``tasks.worker`` column; a pod name has at most 253.
    max_worker_chars: int = 255
    #: ``epoch.attempt.task_id``: 19 and 10 digits, a 128-character task id, two dots.
    max_lease_token_chars: int = 160
    #: Leases one heartbeat may extend: ten full polls' worth.
    max_heartbeat_tokens: int = 10_000
    #: Results in one report (the agent sends at most 1000, ``report_batch``).
    max_report_results: int = 1000


class LocalGrain(Protocol):
    """A grain this replica hosts, as the worker API sees it."""

    @property
    def lease_timeout_s(self) -> float: ...

    async def poll(
        self, *, worker: str, max_tasks: int, max_bytes: int, wait_s: float
    ) -> list[Grant]: ...

    async def heartbeat(self, tokens: Sequence[LeaseToken]) -> list[Verdict]: ...

    async def report(self, reports: Sequence[TaskReport]) -> list[ReportAck]: ...


class GrainDirectory(Protocol):
    async def authenticate(self, pipeline_id: str, token: str) -> bool: ...

    async def local(self, pipeline_id: str) -> LocalGrain | None:
        """The grain if this replica owns it (activating it if needed), else None."""
        ...

    async def owner_address(self, pipeline_id: str) -> str | None: ...


class Unavailable(Exception):
    """The grain cannot serve right now (store down, moving); the worker should retry."""


_Identified = worker_pb2.PollRequest | worker_pb2.HeartbeatRequest | worker_pb2.ReportRequest


class WorkerService(worker_pb2_grpc.WorkerServicer):
    def __init__(
        self,
        *,
        directory: GrainDirectory,
        address: str,
        limits: Limits,
        tracing: Tracing = OFF,
    ) -> None:
        self._directory = directory
        self._address = address
        self._limits = limits
        self._tracing = tracing

    async def Poll(
        self, request: worker_pb2.PollRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.PollResponse:
        return await _guarded(context, "Poll", self._poll(request, context))

    async def Heartbeat(
        self, request: worker_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.HeartbeatResponse:
        return await _guarded(context, "Heartbeat", self._heartbeat(request, context))

    async def Report(
        self, request: worker_pb2.ReportRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ReportResponse:
        return await _guarded(context, "Report", self._report_all(request, context))

    # -- bounds -------------------------------------------------------------------------

    def _identity(self, request: _Identified) -> Iterator[str | None]:
        yield _too_long("pipeline_id", request.pipeline_id, self._limits.max_pipeline_id_chars)
        yield _too_long("worker", request.worker, self._limits.max_worker_chars)

    def _heartbeat_problems(self, request: worker_pb2.HeartbeatRequest) -> Iterator[str | None]:
        tokens = request.lease_tokens
        yield from self._identity(request)
        yield _too_many("lease_tokens", len(tokens), self._limits.max_heartbeat_tokens)
        limit = self._limits.max_lease_token_chars
        for i, text in enumerate(tokens):
            yield _too_long(f"lease_tokens[{i}]", text, limit)

    def _report_problems(self, request: worker_pb2.ReportRequest) -> Iterator[str | None]:
        results = request.results
        yield from self._identity(request)
        yield _too_many("results", len(results), self._limits.max_report_results)
        limit = self._limits.max_lease_token_chars
        for i, result in enumerate(results):
            yield _too_long(f"results[{i}].lease_token", result.lease_token, limit)

    # -- calls --------------------------------------------------------------------------

    async def _poll(
        self, request: worker_pb2.PollRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.PollResponse:
        await _refuse_first(context, self._identity(request))
        grain = await self._grain(request.pipeline_id, context)
        limits = self._limits
        max_tasks = max(1, min(request.max_tasks or 1, limits.max_tasks))
        max_bytes = max(1, min(request.max_bytes or limits.max_bytes, limits.max_bytes))
        wait_s = min(request.wait_ms, limits.max_wait_ms) / 1000
        grants = await self._call(
            context,
            grain.poll(
                worker=request.worker or context.peer(),
                max_tasks=max_tasks,
                max_bytes=max_bytes,
                wait_s=wait_s,
            ),
        )
        leased = [_leased(grant) for grant in grants]
        if self._tracing.enabled:
            mark_dispatched(
                self._tracing,
                pipeline_id=request.pipeline_id,
                worker=request.worker,
                grants=grants,
                leased=leased,
            )
        return worker_pb2.PollResponse(
            tasks=leased, lease_timeout_ms=int(grain.lease_timeout_s * 1000)
        )

    async def _heartbeat(
        self, request: worker_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.HeartbeatResponse:
        await _refuse_first(context, self._heartbeat_problems(request))
        grain = await self._grain(request.pipeline_id, context)
        parsed = [_parse(token) for token in request.lease_tokens]
        valid = [token for token in parsed if token is not None]
        verdicts = iter(await self._call(context, grain.heartbeat(valid)))
        return worker_pb2.HeartbeatResponse(
            verdicts=[
                worker_pb2.LeaseVerdict(
                    lease_token=text,
                    verdict=_VERDICTS[next(verdicts)] if token else worker_pb2.VERDICT_LEASE_LOST,
                )
                for text, token in zip(request.lease_tokens, parsed, strict=True)
            ],
            lease_timeout_ms=int(grain.lease_timeout_s * 1000),
        )

    async def _report_all(
        self, request: worker_pb2.ReportRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ReportResponse:
        await _refuse_first(context, self._report_problems(request))
        grain = await self._grain(request.pipeline_id, context)
        acks: list[worker_pb2.ReportAck | None] = []
        reports: list[TaskReport] = []
        for result in request.results:
            report, rejection = self._report(result)
            acks.append(rejection)
            if report is not None:
                reports.append(report)
        answers = iter(await self._call(context, grain.report(reports)))
        return worker_pb2.ReportResponse(
            acks=[
                ack
                if ack is not None
                else worker_pb2.ReportAck(lease_token=result.lease_token, ack=_ACKS[next(answers)])
                for ack, result in zip(acks, request.results, strict=True)
            ]
        )

    def _report(
        self, result: worker_pb2.TaskResult
    ) -> tuple[TaskReport | None, worker_pb2.ReportAck | None]:
        def reject(detail: str) -> tuple[None, worker_pb2.ReportAck]:
            return None, worker_pb2.ReportAck(
                lease_token=result.lease_token, ack=worker_pb2.ACK_REJECTED, detail=detail
            )

        token = _parse(result.lease_token)
        if token is None:
            return reject(f"malformed lease token {result.lease_token!r}")
        outcome = _OUTCOMES.get(result.outcome)
        if outcome is None:
            return reject("outcome must be SUCCEEDED, FAILED or CANCELLED")
        if len(result.result) > self._limits.max_result_bytes:
            return reject(
                f"result is {len(result.result)} bytes; the limit is "
                f"{self._limits.max_result_bytes}: store large outputs elsewhere "
                "and report a reference"
            )
        error = result.error[-self._limits.max_error_chars :]
        report = TaskReport(
            token=token,
            outcome=outcome,
            result=result.result,
            error=error,
            non_retryable=result.non_retryable,
            timed_out=result.timed_out,
        )
        return report, None

    async def _grain(self, pipeline_id: str, context: grpc.aio.ServicerContext) -> LocalGrain:
        token = _bearer(context)
        if not pipeline_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "pipeline_id is required")
        if token is None or not await self._call(
            context, self._directory.authenticate(pipeline_id, token)
        ):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong worker token for this pipeline "
                "(metadata 'authorization: Bearer <token>')",
            )
        grain = await self._directory.local(pipeline_id)
        if grain is not None:
            return grain
        owner = await self._call(context, self._directory.owner_address(pipeline_id))
        if owner and owner != self._address:
            context.set_trailing_metadata(((OWNER_KEY, owner),))
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"pipeline {pipeline_id} is served by {owner}"
            )
        await _unavailable(context, f"pipeline {pipeline_id} is moving between replicas")

    async def _call(self, context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
        """Await the grain; a grain that cannot serve now answers UNAVAILABLE, not INTERNAL.

        The error's text stays in the log: a store error's may quote SQL and its values.
        """
        try:
            return await call
        except (Unavailable, StoreUnavailable, StaleEpoch) as err:
            incident = new_incident()
            log.info("worker call unavailable (incident %s): %r", incident, err)
            await _unavailable(
                context,
                f"the pipeline cannot be served right now ({type(err).__name__}, incident "
                f"{incident}); retry shortly",
            )


def new_incident() -> str:
    """An id that ties an answer to its log line (random: it reveals nothing)."""
    return secrets.token_hex(8)


async def _guarded(context: grpc.aio.ServicerContext, rpc: str, call: Awaitable[T]) -> T:
    """Await a handler; an unexpected failure answers INTERNAL with an incident id only.

    Without this, gRPC answers UNKNOWN with the exception's text: SQL, its parameters,
    host paths. The log line has the whole error under the same id.
    """
    try:
        return await call
    except grpc.aio.AbortError:
        raise  # an answer chosen on purpose
    except Exception as err:
        incident = new_incident()
        log.error("worker %s failed unexpectedly (incident %s)", rpc, incident, exc_info=err)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"the scheduler failed unexpectedly; it logged this as incident {incident}: "
            "report that id",
        )
        raise AssertionError("abort returned") from err  # pragma: no cover - abort raises


def _too_long(field: str, value: str, limit: int) -> str | None:
    if len(value) <= limit:
        return None
    return f"{field} is {len(value)} characters long; the limit is {limit}"


def _too_many(field: str, count: int, limit: int) -> str | None:
    if count <= limit:
        return None
    return f"{field} has {count} entries; the limit is {limit}: split them over several calls"


async def _refuse_first(context: grpc.aio.ServicerContext, problems: Iterable[str | None]) -> None:
    """INVALID_ARGUMENT with the first problem found, if any (checked lazily, in order)."""
    problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)


async def _unavailable(context: grpc.aio.ServicerContext, detail: str) -> NoReturn:
    context.set_trailing_metadata(((RETRY_AFTER_KEY, "1000"),))
    await context.abort(grpc.StatusCode.UNAVAILABLE, detail)
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def _bearer(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


def _parse(text: str) -> LeaseToken | None:
    try:
        return LeaseToken.decode(text)
    except InvalidToken:
        return None


def _leased(grant: Grant) -> worker_pb2.LeasedTask:
    task = grant.task
    return worker_pb2.LeasedTask(
        lease_token=grant.token.encode(),
        task_id=task.id,
        attempt=task.attempt,
        data=task.data,
        created_at_ms=int(task.created_at.timestamp() * 1000),
        fire_at_ms=int(task.fire_at.timestamp() * 1000) if task.fire_at else 0,
        execution_timeout_ms=_ms(grant.execution_timeout_s),
    )


def _ms(seconds: float | None) -> int:
    """Whole milliseconds for the wire (0: none), at least 1 for a timeout that is set."""
    return 0 if seconds is None else max(1, min(round(seconds * 1000), 2**32 - 1))
