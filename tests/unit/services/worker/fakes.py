"""An in-memory scheduler for the worker agent's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from protos.wsched.v1 import worker_pb2
from services.worker.client import WorkerRejected


def leased(task_id: str, data: bytes = b"{}", attempt: int = 1) -> worker_pb2.LeasedTask:
    return worker_pb2.LeasedTask(
        lease_token=f"lease-{task_id}-{attempt}", task_id=task_id, attempt=attempt, data=data
    )


@dataclass(kw_only=True)
class FakeScheduler:
    """Hands out ``queue``; answers heartbeats from ``verdicts`` (default OK) and reports
    with ``acks`` (default ACCEPTED). ``fail_reports`` / ``fail_polls`` make those calls
    raise WorkerRejected, as the client does once its retries are spent."""

    queue: list[worker_pb2.LeasedTask] = field(default_factory=list)
    lease_timeout_ms: int = 300
    verdicts: dict[str, worker_pb2.Verdict.ValueType] = field(default_factory=dict)
    acks: dict[str, worker_pb2.Ack.ValueType] = field(default_factory=dict)
    fail_reports: int = 0
    fail_polls: bool = False
    polls: list[int] = field(default_factory=list)
    heartbeats: list[list[str]] = field(default_factory=list)
    reports: list[list[worker_pb2.TaskResult]] = field(default_factory=list)
    report_attempts: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(
        self, *, max_tasks: int, max_bytes: int = 0, wait_ms: int = 0
    ) -> worker_pb2.PollResponse:
        self.polls.append(max_tasks)
        if self.fail_polls:
            raise WorkerRejected("poll: UNAUTHENTICATED: wrong token")
        if not self.queue:
            await asyncio.sleep(0.02)  # a short long-poll
        taken, self.queue = self.queue[:max_tasks], self.queue[max_tasks:]
        return worker_pb2.PollResponse(tasks=taken, lease_timeout_ms=self.lease_timeout_ms)

    async def heartbeat(self, tokens: Sequence[str]) -> worker_pb2.HeartbeatResponse:
        self.heartbeats.append(list(tokens))
        self.changed.set()
        return worker_pb2.HeartbeatResponse(
            verdicts=[
                worker_pb2.LeaseVerdict(
                    lease_token=token, verdict=self.verdicts.get(token, worker_pb2.VERDICT_OK)
                )
                for token in tokens
            ],
            lease_timeout_ms=self.lease_timeout_ms,
        )

    async def report(self, results: Sequence[worker_pb2.TaskResult]) -> worker_pb2.ReportResponse:
        self.report_attempts += 1
        self.changed.set()
        if self.fail_reports:
            self.fail_reports -= 1
            raise WorkerRejected("report: gave up after 60 attempts")
        self.reports.append(list(results))
        return worker_pb2.ReportResponse(
            acks=[
                worker_pb2.ReportAck(
                    lease_token=r.lease_token,
                    ack=self.acks.get(r.lease_token, worker_pb2.ACK_ACCEPTED),
                )
                for r in results
            ]
        )

    def reported(self) -> dict[str, worker_pb2.TaskResult]:
        return {r.lease_token: r for batch in self.reports for r in batch}

    async def until(self, condition: object, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until ``condition()`` holds; it is checked on every call."""
        assert callable(condition)
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.changed.clear()
                await asyncio.wait([asyncio.ensure_future(self.changed.wait())], timeout=0.01)
