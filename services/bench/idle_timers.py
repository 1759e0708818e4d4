"""``wsched bench-idle --timers``: pipelines whose only work is a task due later.

One task is submitted to every pipeline, all due at the same moment a few minutes ahead.
Their grains rest (``WSCHED_GRAIN_IDLE_TIMEOUT_S``) with a wake-up in the store, and the
system is measured idle as with empty pipelines. Then every pipeline gets a long poll,
parked at the replica while its grain rests; the wake-up index activates the grains
before the due time and each poll is answered when its task is due. The figure is each
task's lateness: when its poll got it, less the due time (a herd of wake-ups and firings
at one moment). Each task is reported done, so the grains are quiescent again after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import grpc

from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.bench.measure import percentile
from services.bench.system import BenchFailed, Say, Tenant

Report = dict[str, Any]

#: Channels the polls are spread over (one HTTP/2 connection each).
_CHANNELS = 64


def submit_due_at(
    tenant: Tenant, count: int, due_at: float, *, concurrency: int, say: Say
) -> float:
    """One task due at ``due_at`` (epoch seconds) to each of the ``count`` pipelines;
    returns how long the submits took."""
    import concurrent.futures

    run_at = dt.datetime.fromtimestamp(due_at, dt.UTC).isoformat()
    say(f"submitting one task due at {run_at} to each of {count} pipelines")
    started = time.monotonic()

    def submit(index: int) -> None:
        path = f"/api/applications/bench/pipelines/idle-{index:05d}/tasks"
        body = {"tasks": [{"id": "later", "data": {"i": index}, "run_at": run_at}]}
        answer = tenant.http.post(path, json=body)
        if answer.status_code not in (200, 201, 202):
            raise BenchFailed(f"submitting: {answer.status_code} {answer.text}")

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(submit, range(count)))
    return time.monotonic() - started


def lateness(target: str, tokens: dict[str, str], due_at: float, say: Say) -> Report:
    """Long-poll every pipeline from a little before ``due_at`` until each got its task
    (reported done at once); the lateness of each, in milliseconds."""
    wait = due_at - 20 - time.time()
    if wait > 0:
        say(f"waiting {wait:.0f}s, then long-polling every pipeline for its task")
        time.sleep(wait)
    got = asyncio.run(_poll_all(target, tokens, deadline=due_at + 120))
    late_ms = sorted((at - due_at) * 1000 for at in got.values())
    report: Report = {"tasks": len(tokens), "handed_out": len(got)}
    if late_ms:
        report.update(
            {
                "early_ms": round(min(late_ms), 1),
                "p50_ms": round(percentile(late_ms, 0.50), 1),
                "p99_ms": round(percentile(late_ms, 0.99), 1),
                "max_ms": round(late_ms[-1], 1),
            }
        )
    return report


async def _poll_all(target: str, tokens: dict[str, str], *, deadline: float) -> dict[str, float]:
    channels = [grpc.aio.insecure_channel(target) for _ in range(_CHANNELS)]
    stubs = [worker_pb2_grpc.WorkerStub(channel) for channel in channels]
    got: dict[str, float] = {}
    try:
        await asyncio.gather(
            *(
                _until_handed_out(stubs[i % _CHANNELS], pid, token, deadline, got.__setitem__)
                for i, (pid, token) in enumerate(tokens.items())
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    return got


async def _until_handed_out(
    stub: worker_pb2_grpc.WorkerStub,
    pipeline_id: str,
    token: str,
    deadline: float,
    record: Callable[[str, float], None],
) -> None:
    auth = (("authorization", f"Bearer {token}"),)
    request = worker_pb2.PollRequest(
        pipeline_id=pipeline_id, worker="bench-timers", max_tasks=1, wait_ms=20_000
    )
    while time.time() < deadline:
        try:
            reply = await stub.Poll(request, metadata=auth, timeout=30)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.5)
            continue
        if not reply.tasks:
            continue
        record(pipeline_id, time.time())
        done = worker_pb2.ReportRequest(
            pipeline_id=pipeline_id,
            worker="bench-timers",
            results=[
                worker_pb2.TaskResult(
                    lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED
                )
                for t in reply.tasks
            ],
        )
        for _ in range(3):  # not the figure: a report lost is a task run again later
            try:
                await stub.Report(done, metadata=auth, timeout=30)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(1)
        return


def wait_resting(active: Callable[[], int], *, limit_s: float) -> int:
    """Until no grain is active (every one rested with its wake-up) or ``limit_s`` ran
    out; how many are still active then."""
    deadline = time.monotonic() + limit_s
    while (left := active()) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
