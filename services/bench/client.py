"""The benchmark's submitting client: batches of 100-byte no-op tasks over HTTP.

Run as its own process (``python -m services.bench.client ...``) so that building and
sending requests does not share an interpreter with the API or the scheduler. Batches go
out ``concurrency`` at a time, as fast as they are answered, or paced at ``--rate`` tasks
per second (open loop: batch ``i`` is due at ``start + i * batch / rate`` whatever the
answers do, so a slow answer does not lower the offered load). The summary, with each
batch's latency, is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

TASK_DATA_BYTES = 100
#: Bounded retries of a batch the API refused for now (503 broker busy): a benchmark that
#: gives up on the first hiccup measures nothing, one that retries forever hides a fault.
_RETRIES = 5


def task_data(index: int) -> dict[str, Any]:
    """Task ``index``'s data: a JSON object of exactly 100 bytes in compact form."""
    head = len(json.dumps({"i": index, "p": ""}, separators=(",", ":")))
    return {"i": index, "p": "x" * (TASK_DATA_BYTES - head)}


def batch_body(start: int, count: int, *, due: Due | None = None) -> bytes:
    tasks: list[dict[str, Any]] = [{"data": task_data(i)} for i in range(start, start + count)]
    if due is not None:
        for offset, item in enumerate(tasks):
            item["run_at"] = due.run_at(start + offset)
    return json.dumps({"tasks": tasks}, separators=(",", ":")).encode()


@dataclass(frozen=True, kw_only=True)
class Due:
    """Due times spread evenly over ``[first_unix, last_unix]``, in task order."""

    first_unix: float
    last_unix: float
    tasks: int

    def run_at(self, index: int) -> str:
        share = index / max(1, self.tasks - 1)
        at = self.first_unix + (self.last_unix - self.first_unix) * share
        return dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat()


class SubmitFailed(Exception):
    """The API did not accept a batch; the benchmark's figures would be meaningless."""


@dataclass(kw_only=True)
class Summary:
    tasks: int = 0
    batches: int = 0
    retries: int = 0
    first_submit_unix: float = 0.0
    last_ack_unix: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Plan:
    tasks: int
    batch: int
    concurrency: int
    #: Tasks per second to offer; 0 means as fast as the API answers.
    rate: float = 0.0
    #: Delayed tasks: their due times; None: due at once.
    due: Due | None = None

    def batches(self) -> list[tuple[int, int]]:
        return [
            (start, min(self.batch, self.tasks - start))
            for start in range(0, self.tasks, self.batch)
        ]


async def _post(http: httpx.AsyncClient, path: str, body: bytes, summary: Summary) -> None:
    for attempt in range(_RETRIES + 1):
        answer = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        if answer.status_code == 202:
            return
        if answer.status_code != 503 or attempt == _RETRIES:
            raise SubmitFailed(f"batch refused: {answer.status_code} {answer.text[:500]}")
        summary.retries += 1
        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))


async def _sender(
    http: httpx.AsyncClient,
    path: str,
    plan: Plan,
    queue: asyncio.Queue[tuple[int, int, int]],
    summary: Summary,
    started: float,
) -> None:
    loop = asyncio.get_running_loop()
    while not queue.empty():
        number, start, count = queue.get_nowait()
        if plan.rate > 0:
            await asyncio.sleep(max(0.0, started + number * plan.batch / plan.rate - loop.time()))
        body = batch_body(start, count, due=plan.due)
        if not summary.first_submit_unix:
            summary.first_submit_unix = time.time()
        sent = loop.time()
        await _post(http, path, body, summary)
        summary.latencies_ms.append((loop.time() - sent) * 1000)
        summary.last_ack_unix = time.time()
        summary.tasks += count
        summary.batches += 1


async def submit(*, api: str, key: str, pipeline_path: str, plan: Plan) -> Summary:
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for number, (start, count) in enumerate(plan.batches()):
        queue.put_nowait((number, start, count))
    summary = Summary()
    limits = httpx.Limits(max_connections=plan.concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=120, limits=limits) as http:
        started = asyncio.get_running_loop().time()
        senders = [
            _sender(http, f"{pipeline_path}/tasks", plan, queue, summary, started)
            for _ in range(plan.concurrency)
        ]
        await asyncio.gather(*senders)
    return summary


def target_parser(description: str) -> argparse.ArgumentParser:
    """A submitting client's parser with the pipeline it submits to (shared with the
    open-loop latency client)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--api", required=True, help="the API's base URL")
    parser.add_argument("--key", required=True, help="the tenant's API key")
    parser.add_argument("--pipeline-path", required=True, help="/api/applications/A/pipelines/P")
    return parser


def _arguments() -> argparse.Namespace:
    parser = target_parser(__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--rate", type=float, default=0.0, help="tasks/s; 0: unpaced")
    parser.add_argument("--due-from", type=float, default=0.0, help="first due time (unix)")
    parser.add_argument("--due-to", type=float, default=0.0, help="last due time (unix)")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    due = (
        Due(first_unix=args.due_from, last_unix=args.due_to, tasks=args.tasks)
        if args.due_from
        else None
    )
    plan = Plan(
        tasks=args.tasks, batch=args.batch, concurrency=args.concurrency, rate=args.rate, due=due
    )
    summary = asyncio.run(
        submit(api=args.api, key=args.key, pipeline_path=args.pipeline_path, plan=plan)
    )
    # Written whole, then renamed: the orchestrator treats the file's presence as success.
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(summary)))
    partial.rename(args.out)


if __name__ == "__main__":
    main()
