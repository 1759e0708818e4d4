"""What tracing costs on the task path, off and on: ``python -m services.observability.bench``.

Times the per-task work of the three hops that trace (encoding a submit, decoding a
batch, turning grants into leased tasks) with tracing off, as the product runs by
default, and on with a span processor that drops everything (the cost of making spans,
without an exporter's). Off must be what it was before tracing existed: the hops check
``Tracing.enabled`` (or are not wrapped) and touch nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import SpanProcessor

from actors.pipeline.model import AdmitBatch, AdmitResult, Grant, LeaseToken, Status, Task
from services.api.tracing import TracedProducer
from services.kafka.consumer import ConsumedRecord
from services.kafka.producer import MemoryProducer, OutgoingTask, submit_records
from services.observability import log_context, setup_tracing
from services.placement import Route
from services.scheduler.forwarder import build_batch
from services.scheduler.tracing import mark_dispatched, traced_admit
from services.scheduler.worker_api import _leased

TASKS = 10_000
ROUNDS = 7
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ROUTE = Route("p")


def _best_us_per_task(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best / TASKS * 1e6


def main() -> None:
    tasks = [OutgoingTask(id=f"t{i}", data=b'{"n":1}', data_sha256=b"x" * 32) for i in range(TASKS)]
    records = submit_records(ROUTE, tasks, now_ms=0)
    consumed = {
        0: [
            ConsumedRecord(partition=0, offset=i, value=r.value, timestamp_ms=0)
            for i, r in enumerate(records)
        ]
    }
    grants = [
        Grant(
            token=LeaseToken(task_id=t.id, attempt=1, epoch=1),
            task=Task(
                id=t.id,
                attempt=1,
                status=Status.LEASED,
                data=t.data,
                due_at=NOW,
                created_at=NOW,
                trace_parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )
        for t in tasks
    ]
    on = setup_tracing(service="bench", endpoint=None, processors=[SpanProcessor()])

    async def admit(batch: AdmitBatch) -> AdmitResult:
        return AdmitResult(admitted=0, duplicates=0, conflicts=0, cancelled=0, requeued=0)

    batch = build_batch("p", consumed).batch
    batch = dataclasses.replace(
        batch,
        new=tuple(
            dataclasses.replace(t, trace_parent=g.task.trace_parent)
            for t, g in zip(batch.new, grants, strict=True)
        ),
    )
    traced = traced_admit(admit, tracing=on, pipeline_id="p")

    async def admit_all() -> AdmitResult:
        return await traced(batch)

    producer = TracedProducer(MemoryProducer(), tracing=on)

    def leased_on() -> None:
        leased = [_leased(g) for g in grants]
        mark_dispatched(on, pipeline_id="p", worker="w", grants=grants, leased=leased)

    def log_contexts() -> None:
        for t in tasks:
            with log_context(task_id=t.id):
                pass

    figures = {
        "submit_records_off_us": _best_us_per_task(lambda: submit_records(ROUTE, tasks, now_ms=0)),
        "submit_traced_on_us": _best_us_per_task(
            lambda: asyncio.run(producer.submit(ROUTE, tasks))
        ),
        "build_batch_off_us": _best_us_per_task(lambda: build_batch("p", consumed)),
        "admit_traced_on_us": _best_us_per_task(lambda: asyncio.run(admit_all())),
        "leased_off_us": _best_us_per_task(lambda: [_leased(g) for g in grants]),
        "leased_dispatch_on_us": _best_us_per_task(leased_on),
        "agent_log_context_us": _best_us_per_task(log_contexts),
    }
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}, indent=2))


if __name__ == "__main__":
    main()
