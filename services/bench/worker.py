"""The benchmark's no-op worker: polls tasks in batches and reports them done in batches.

Run as its own process (``python -m services.bench.worker ...``); SIGTERM ends it after
the batch in hand is reported. ``--hold N`` makes it a holder instead: it polls until it
holds N leases and reports nothing until SIGTERM (then reports them all), which is how
the benchmark measures the scheduler's memory per in-flight task. Its counts are written
as JSON to ``--out`` on exit. ``--execution-log`` appends one ``task id<TAB>lease token``
line per task it was handed, before reporting it: the chaos soak (``services/chaos``)
counts executions from it, as the store keeps only the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from protos.wsched.v1 import worker_pb2
from services.worker.client import SchedulerClient

#: gRPC's default 4 MiB message limit bounds a report; 1,000 small results fit easily.
_REPORT_CHUNK = 1000


@dataclass(kw_only=True)
class Counts:
    polls: int = 0
    leased: int = 0
    reported: int = 0
    accepted: int = 0


async def _report(
    client: SchedulerClient, tasks: Sequence[worker_pb2.LeasedTask], counts: Counts
) -> None:
    for start in range(0, len(tasks), _REPORT_CHUNK):
        chunk = tasks[start : start + _REPORT_CHUNK]
        answer = await client.report(
            [
                worker_pb2.TaskResult(
                    lease_token=task.lease_token, outcome=worker_pb2.OUTCOME_SUCCEEDED
                )
                for task in chunk
            ]
        )
        counts.reported += len(chunk)
        counts.accepted += sum(1 for ack in answer.acks if ack.ack == worker_pb2.ACK_ACCEPTED)


async def _poll(
    client: SchedulerClient, max_tasks: int, counts: Counts
) -> list[worker_pb2.LeasedTask]:
    reply = await client.poll(max_tasks=max_tasks, wait_ms=1000)
    counts.polls += 1
    counts.leased += len(reply.tasks)
    return list(reply.tasks)


def _log_executions(log: TextIO | None, tasks: Sequence[worker_pb2.LeasedTask]) -> None:
    """Flushed before the report: a worker killed after it is still counted as running it."""
    if log is not None and tasks:
        log.write("".join(f"{task.task_id}\t{task.lease_token}\n" for task in tasks))
        log.flush()


async def _work_loop(
    client: SchedulerClient,
    max_tasks: int,
    stop: asyncio.Event,
    counts: Counts,
    log: TextIO | None = None,
) -> None:
    while not stop.is_set():
        tasks = await _poll(client, max_tasks, counts)
        _log_executions(log, tasks)
        if tasks:
            await _report(client, tasks, counts)


async def _hold(
    client: SchedulerClient, hold: int, max_tasks: int, stop: asyncio.Event, counts: Counts
) -> None:
    held: list[worker_pb2.LeasedTask] = []
    while not stop.is_set() and len(held) < hold:
        held.extend(await _poll(client, min(max_tasks, hold - len(held)), counts))
    await stop.wait()
    await _report(client, held, counts)


async def run(args: argparse.Namespace) -> Counts:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = SchedulerClient(
        addresses=args.target.split(","),
        pipeline_id=args.pipeline_id,
        token=args.token,
        worker=args.name,
    )
    counts = Counts()
    log = args.execution_log.open("a") if args.execution_log else None
    try:
        if args.hold:
            await _hold(client, args.hold, args.max_tasks, stop, counts)
        else:
            # Several loops per process: one polls while another waits for its report
            # to become durable, as a worker with a few execution slots would.
            loops = [
                _work_loop(client, args.max_tasks, stop, counts, log) for _ in range(args.loops)
            ]
            await asyncio.gather(*loops)
    finally:
        await client.close()
        if log is not None:
            log.close()
    return counts


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", required=True, help="the scheduler's gRPC host:port (several: commas)"
    )
    parser.add_argument("--pipeline-id", required=True)
    parser.add_argument("--token", required=True, help="the pipeline's worker token")
    parser.add_argument("--name", default="bench-worker")
    parser.add_argument("--max-tasks", type=int, default=1000, help="tasks per poll")
    parser.add_argument("--loops", type=int, default=2, help="poll/report loops in flight")
    parser.add_argument("--hold", type=int, default=0, help="hold this many leases; 0: work")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--execution-log", type=Path, help="append task id, lease token lines")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    counts = asyncio.run(run(args))
    args.out.write_text(json.dumps(asdict(counts)))


if __name__ == "__main__":
    main()
