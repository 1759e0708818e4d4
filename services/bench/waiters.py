"""``wsched bench-waiters``: many clients waiting for their tasks on one API process.

``waiters`` tasks are submitted and admitted; then one ``GET .../tasks/{id}?wait=60s`` per
task is sent, all at once, from this process, and held by the API (its
``wsched_api_waiters`` gauge says when all are). A worker in a thread of its own then
takes the tasks and reports them succeeded at ``rate`` tasks a second, in reports of
``report_batch``; a report is acknowledged only once its results are in TiDB, so the
acknowledgement's time is "terminal in TiDB" (a millisecond or so late: the
acknowledgement's own trip).

Figures:

- ``added_p50/p99/max_ms``: from a task's acknowledgement to the first line of its
  waiter's answer arriving here (read with plain asyncio streams; this process's own
  scheduling still counts against us);
- ``server_lag_p50/p99_ms``: the API's own view (``wsched_api_wait_lag_seconds``), from
  the grain's commit (its event's time) to the answer, interpolated in its buckets;
  ``event_lag_p50/p99_ms`` the part of it until the event reached the API;
- ``api_cpu_percent``: the API process's CPU over the reporting window, in % of one core,
  beside the scheduler's, Kafka's and TiDB's.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protos.wsched.v1 import worker_pb2
from services.bench.measure import CpuUse, histogram_quantile, percentile, scrape
from services.bench.report import machine
from services.bench.system import (
    BenchFailed,
    Components,
    Pipeline,
    Say,
    System,
    Tenant,
    bench_system,
)
from services.infra.cache import Cache
from services.worker.client import SchedulerClient

Report = dict[str, Any]
_WAIT = "60s"


@dataclass(frozen=True, kw_only=True)
class Options:
    waiters: int = 1000
    #: Tasks reported succeeded per second.
    rate: float = 200.0
    report_batch: int = 10


def run(
    options: Options, *, cache: Cache, say: Say, components: Components | None = None
) -> Report:
    """The figures of one run; ``components`` given means: use them, start none."""
    report: Report = {"machine": machine(), "workload": vars(options).copy()}
    with bench_system("waiters", cache=cache, say=say, components=components) as system:
        tenant = Tenant(api=system.api)
        try:
            pipeline = tenant.pipeline("waiters", lease_timeout_s=120)
            _submit(tenant, pipeline, options.waiters, say)
            report.update(asyncio.run(_measure(system, tenant, pipeline, options, say)))
        finally:
            tenant.http.close()
    report["machine"]["load_average_1m_after"] = round(_load(), 2)
    return report


def _load() -> float:
    return os.getloadavg()[0]


def _ids(count: int) -> list[str]:
    return [f"w{i:05d}" for i in range(count)]


def _submit(tenant: Tenant, pipeline: Pipeline, count: int, say: Say) -> None:
    say(f"submitting {count} tasks")
    ids = _ids(count)
    for start in range(0, count, 500):
        body = {"tasks": [{"id": i, "data": {"i": i}} for i in ids[start : start + 500]]}
        tenant.http.post(f"{pipeline.path}/tasks", json=body).raise_for_status()
    deadline = time.monotonic() + 120
    while tenant.stats(pipeline)["counts"].get("queued", 0) < count:
        if time.monotonic() > deadline:
            raise BenchFailed("the tasks were not admitted within 120 s")
        time.sleep(0.2)


async def _measure(
    system: System, tenant: Tenant, pipeline: Pipeline, options: Options, say: Say
) -> Report:
    ids = _ids(options.waiters)
    answered: dict[str, float] = {}
    statuses: dict[str, str] = {}
    host, port = _address(system.api)
    auth = tenant.http.headers["Authorization"]

    async def wait(task_id: str) -> None:
        path = f"{pipeline.path}/tasks/{task_id}?wait={_WAIT}"
        status, body = await _raw_get(host, port, path, auth, answered, task_id)
        statuses[task_id] = json.loads(body).get("status", "") if status == 200 else str(status)

    say(f"sending {len(ids)} waiters")
    waiting = [asyncio.create_task(wait(i)) for i in ids]
    await _until_waiting(system, len(ids))
    await asyncio.sleep(2.0)  # their first reads of the rows done: measure the wake alone
    lag_before = _lag_buckets(system, "wsched_api_wait_lag_seconds_bucket")
    event_before = _lag_buckets(system, "wsched_api_event_lag_seconds_bucket")
    say(f"{len(ids)} waiters held; reporting the tasks at {options.rate:g}/s")
    with CpuUse({"api": system.pids["api"], **_others(system)}) as cpu:
        acked = await asyncio.to_thread(_work, system, pipeline, options)
        await asyncio.wait_for(asyncio.gather(*waiting), 90)
    lag_after = _lag_buckets(system, "wsched_api_wait_lag_seconds_bucket")
    event_after = _lag_buckets(system, "wsched_api_event_lag_seconds_bucket")
    report = _figures(ids, acked, answered, statuses, cpu, lag_before, lag_after)
    for q in (0.5, 0.99):
        quantile = histogram_quantile(q, event_before, event_after)
        report[f"event_lag_p{round(q * 100)}_ms"] = round(quantile * 1000, 1)
    return report


def _address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 80


async def _raw_get(
    host: str, port: int, path: str, auth: str, answered: dict[str, float], task_id: str
) -> tuple[int, bytes]:
    """One GET on a connection of its own, timed at its answer's first line.

    Plain asyncio streams, not an HTTP client library: with a thousand answers arriving
    together, a client's own per-response work would be measured as the API's.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        answered[task_id] = time.monotonic()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        body = await reader.readexactly(length)
        return int(status_line.split()[1]), body
    finally:
        writer.close()


def _others(system: System) -> dict[str, int]:
    return {k: v for k, v in system.pids.items() if k in ("scheduler", "kafka", "tidb")}


async def _until_waiting(system: System, count: int) -> None:
    deadline = time.monotonic() + 60
    while _waiters(system) < count:
        if time.monotonic() > deadline:
            raise BenchFailed(f"only {_waiters(system):.0f} of {count} waiters held after 60 s")
        await asyncio.sleep(0.2)


def _waiters(system: System) -> float:
    return scrape(f"{system.api}/metrics").get(("wsched_api_waiters", ()), 0.0)


def _lag_buckets(system: System, metric: str) -> dict[float, float]:
    return {
        float(dict(labels)["le"]): value
        for (name, labels), value in scrape(f"{system.api}/metrics").items()
        if name == metric
    }


def _work(system: System, pipeline: Pipeline, options: Options) -> dict[str, float]:
    """The worker, on its own thread and event loop so the waiters' loop cannot delay its
    acknowledgements' timestamps."""
    acked: dict[str, float] = {}
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(_report_all(system, pipeline, options, acked))
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            errors.append(err)

    thread = threading.Thread(target=main, name="bench worker")
    thread.start()
    thread.join()
    if errors:
        raise BenchFailed(f"the worker failed: {errors[0]!r}") from errors[0]
    return acked


async def _report_all(
    system: System, pipeline: Pipeline, options: Options, acked: dict[str, float]
) -> None:
    client = SchedulerClient(
        addresses=[system.grpc], pipeline_id=pipeline.id, token=pipeline.token, worker="bench"
    )
    try:
        leased: list[worker_pb2.LeasedTask] = []
        while len(leased) < options.waiters:
            reply = await client.poll(max_tasks=options.waiters - len(leased), wait_ms=1000)
            leased.extend(reply.tasks)
        started = time.monotonic()
        for n, start in enumerate(range(0, len(leased), options.report_batch)):
            due = started + n * options.report_batch / options.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await _report(client, leased[start : start + options.report_batch], acked)
    finally:
        await client.close()


async def _report(
    client: SchedulerClient, tasks: Sequence[worker_pb2.LeasedTask], acked: dict[str, float]
) -> None:
    results = [
        worker_pb2.TaskResult(lease_token=t.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED)
        for t in tasks
    ]
    answer = await client.report(results)
    now = time.monotonic()
    for task, ack in zip(tasks, answer.acks, strict=True):
        if ack.ack == worker_pb2.ACK_ACCEPTED:
            acked[task.task_id] = now


def _figures(
    ids: Sequence[str],
    acked: dict[str, float],
    answered: dict[str, float],
    statuses: dict[str, str],
    cpu: CpuUse,
    lag_before: dict[float, float],
    lag_after: dict[float, float],
) -> Report:
    added = [(answered[i] - acked[i]) * 1000 for i in ids if i in acked and i in answered]
    if not added:
        raise BenchFailed("no waiter was answered after its task's acknowledgement")
    wall = cpu.seconds["wall"] or 1.0
    return {
        "waiters": len(ids),
        "answered_succeeded": sum(1 for s in statuses.values() if s == "succeeded"),
        "added_p50_ms": round(percentile(added, 0.5), 1),
        "added_p99_ms": round(percentile(added, 0.99), 1),
        "added_max_ms": round(max(added), 1),
        "server_lag_p50_ms": round(histogram_quantile(0.5, lag_before, lag_after) * 1000, 1),
        "server_lag_p99_ms": round(histogram_quantile(0.99, lag_before, lag_after) * 1000, 1),
        "window_s": wall,
        "api_cpu_percent": round(100 * cpu.seconds.get("api", 0.0) / wall, 1),
        "cpu_seconds": {k: v for k, v in cpu.seconds.items() if k != "wall"},
    }
