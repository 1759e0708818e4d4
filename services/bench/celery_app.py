"""The Celery app of ``wsched bench-celery``: one no-op task, a worker and a client.

Run as processes of their own by :mod:`services.bench.celery_side`:

* ``python -m services.bench.celery_app worker --setup a --redis URL --concurrency N
  --ready FILE``: a prefork worker configured as setup ``a`` or ``b``; it touches
  ``FILE`` when Celery says it is ready.
* ``python -m services.bench.celery_app submit --setup a --redis URL --tasks N --batch B
  --out FILE``: submits ``N`` tasks as ``group``s of ``B`` signatures, one after the
  other, then writes its first and last submit times and its CPU seconds to ``FILE``.

The broker is database 0 of ``URL``, the results database 1. The two setups are defined
here, beside the app they configure, so that these processes import nothing else of ours
but the task's data (an import is CPU the client's figure counts).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery, group
from celery.signals import worker_ready

from services.bench.client import task_data

NOOP_TASK = "wsched_bench.noop"
#: Where Celery's broker and its results live on each setup's Redis.
BROKER_DB, RESULT_DB = 0, 1


@dataclass(frozen=True, kw_only=True)
class Setup:
    """One Celery configuration and the Redis it runs on."""

    key: str
    title: str
    acks_late: bool
    prefetch_multiplier: int
    redis_aof: bool

    def celery_config(self) -> dict[str, object]:
        return {
            "task_acks_late": self.acks_late,
            "worker_prefetch_multiplier": self.prefetch_multiplier,
        }

    def redis_config(self) -> list[str]:
        """redis-server flags for persistence: AOF every second, or none at all."""
        if self.redis_aof:
            return ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]
        return ["--save", "", "--appendonly", "no"]


SETUPS = {
    "a": Setup(
        key="a",
        title="fastest documented: early acks, prefetch x128, no persistence",
        acks_late=False,
        prefetch_multiplier=128,
        redis_aof=False,
    ),
    "b": Setup(
        key="b",
        title="like ours: acks_late, prefetch x1, Redis AOF everysec",
        acks_late=True,
        prefetch_multiplier=1,
        redis_aof=True,
    ),
}


def noop(data: dict[str, Any]) -> None:
    """The workload's task: nothing, and ``None`` as its result."""
    del data


def make_app(*, setup: str, redis_url: str, results: bool) -> Any:
    """The Celery app of ``setup``; ``results`` off for the submitting client (see
    :mod:`services.bench.celery_side` on why it does not subscribe to every result)."""
    app = Celery("wsched_bench", broker=f"{redis_url}/{BROKER_DB}")
    app.conf.update(
        result_backend=f"{redis_url}/{RESULT_DB}" if results else None,
        broker_connection_retry_on_startup=True,
        **SETUPS[setup].celery_config(),
    )
    app.task(name=NOOP_TASK)(noop)
    return app


def work(args: argparse.Namespace) -> None:
    app = make_app(setup=args.setup, redis_url=args.redis, results=True)

    def ready(**_: object) -> None:
        args.ready.touch()

    worker_ready.connect(ready, weak=False)
    app.worker_main(
        argv=[
            "worker",
            "--pool=prefork",
            f"--concurrency={args.concurrency}",
            f"--hostname=bench-{args.setup}@%h",
            # Gossip, mingle and heartbeats coordinate several workers: there is one here.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ]
    )


def submit(args: argparse.Namespace) -> None:
    app = make_app(setup=args.setup, redis_url=args.redis, results=False)
    noop_task = app.tasks[NOOP_TASK]
    first = 0.0
    with app.producer_or_acquire() as producer:
        for start in range(0, args.tasks, args.batch):
            count = min(args.batch, args.tasks - start)
            batch = group(noop_task.s(task_data(i)) for i in range(start, start + count))
            first = first or time.time()
            batch.apply_async(producer=producer)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "tasks": args.tasks,
        "first_submit_unix": first,
        "last_submit_unix": time.time(),
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    # Written whole, then renamed: the orchestrator treats the file's presence as success.
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(summary))
    partial.rename(args.out)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker, client = commands.add_parser("worker"), commands.add_parser("submit")
    for command in (worker, client):
        command.add_argument("--setup", choices=sorted(SETUPS), required=True)
        command.add_argument("--redis", required=True, help="redis://127.0.0.1:PORT")
    worker.add_argument("--concurrency", type=int, required=True, help="pool processes")
    worker.add_argument("--ready", type=Path, required=True, help="touched once ready")
    client.add_argument("--tasks", type=int, required=True)
    client.add_argument("--batch", type=int, default=1000, help="signatures per group")
    client.add_argument("--out", type=Path, required=True, help="where the summary goes")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    (work if args.command == "worker" else submit)(args)


if __name__ == "__main__":
    main()
