"""The soak's submitting client: paced batches through both API processes in turn.

Run as its own process (``python -m services.chaos.submitter ...``). Task ``i`` has the
id ``t-<i>``, so a batch retried after a 503 or a dropped connection carries the same ids
and the scheduler collapses what was admitted twice. Batch ``n`` goes to API ``n % 2``
and every retry to the other one. A task counts as accepted once its batch is answered
202 (its result ``queued`` or ``existing``). The summary, with the time of each accepted
batch's answer, is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("wsched.chaos.submitter")
#: How long one batch is retried: longer than any outage the soak causes.
RETRY_FOR_S = 300.0
ACCEPTED_RESULTS = ("queued", "existing")


def task_id(index: int) -> str:
    return f"t-{index:07d}"


@dataclass(kw_only=True)
class Summary:
    #: [first index, count, unix time of the 202] per accepted batch.
    accepted: list[tuple[int, int, float]] = field(default_factory=list)
    #: Items answered with something else than queued or existing, by result.
    refused_items: dict[str, int] = field(default_factory=dict)
    #: Batches given up after ``RETRY_FOR_S``: [first index, count].
    abandoned: list[tuple[int, int]] = field(default_factory=list)
    retries: int = 0
    by_api: list[int] = field(default_factory=lambda: [0, 0])


@dataclass(frozen=True, kw_only=True)
class Plan:
    apis: list[str]
    key: str
    pipeline_path: str
    tasks: int
    batch: int
    rate: float
    concurrency: int = 4


def _body(start: int, count: int) -> bytes:
    items = [{"id": task_id(i), "data": {"i": i}} for i in range(start, start + count)]
    return json.dumps({"tasks": items}, separators=(",", ":")).encode()


async def _try(http: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response | None:
    """One attempt; None when the API could not be reached or dropped the request."""
    try:
        return await http.post(url, content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError as err:
        log.warning("submit to %s failed: %r", url, err)
        return None


async def _send(
    http: httpx.AsyncClient, plan: Plan, number: int, start: int, count: int, summary: Summary
) -> None:
    body, deadline = _body(start, count), time.monotonic() + RETRY_FOR_S
    api = number % len(plan.apis)
    while time.monotonic() < deadline:
        answer = await _try(http, f"{plan.apis[api]}{plan.pipeline_path}/tasks", body)
        if answer is not None and answer.status_code == 202:
            _record(answer.json()["results"], start, count, api, summary)
            return
        if answer is not None and answer.status_code < 500:
            raise SystemExit(f"batch at {start} refused: {answer.status_code} {answer.text[:300]}")
        summary.retries += 1
        api = (api + 1) % len(plan.apis)
        pause = float(answer.headers.get("Retry-After", "1")) if answer is not None else 1.0
        await asyncio.sleep(min(pause, 2.0))
    log.error("batch at %d abandoned after %.0fs of retries", start, RETRY_FOR_S)
    summary.abandoned.append((start, count))


def _record(results: list[dict[str, object]], start: int, count: int, api: int, s: Summary) -> None:
    refused = [str(r["result"]) for r in results if r["result"] not in ACCEPTED_RESULTS]
    for result in refused:
        s.refused_items[result] = s.refused_items.get(result, 0) + 1
    if refused:
        raise SystemExit(f"batch at {start}: items refused {sorted(set(refused))}")
    s.accepted.append((start, count, time.time()))
    s.by_api[api] += count


async def _sender(
    http: httpx.AsyncClient, plan: Plan, queue: asyncio.Queue[int], summary: Summary
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not queue.empty():
        number = queue.get_nowait()
        start = number * plan.batch
        await asyncio.sleep(max(0.0, started + start / plan.rate - loop.time()))
        await _send(http, plan, number, start, min(plan.batch, plan.tasks - start), summary)


async def submit(plan: Plan) -> Summary:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range((plan.tasks + plan.batch - 1) // plan.batch):
        queue.put_nowait(number)
    summary = Summary()
    headers = {"Authorization": f"Bearer {plan.key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        await asyncio.gather(
            *(_sender(http, plan, queue, summary) for _ in range(plan.concurrency))
        )
    return summary


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apis", required=True, help="the API processes' base URLs, commas")
    parser.add_argument("--key", required=True, help="the tenant's API key")
    parser.add_argument("--pipeline-path", required=True, help="/api/applications/A/pipelines/P")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=float, required=True, help="tasks/s offered")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    return parser.parse_args()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _arguments()
    plan = Plan(
        apis=args.apis.split(","),
        key=args.key,
        pipeline_path=args.pipeline_path,
        tasks=args.tasks,
        batch=args.batch,
        rate=args.rate,
    )
    summary = asyncio.run(submit(plan))
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(summary)))
    partial.rename(args.out)


if __name__ == "__main__":
    main()
