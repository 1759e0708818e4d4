"""Open-loop submit latency: requests sent on a fixed schedule, timed from that schedule.

Run as its own process (``python -m services.bench.latency ...``). Request ``i`` is due at
``start + i / rate`` whatever the earlier answers do, so a slow answer cannot lower the
offered load and hide the queue behind it; its latency runs from that due time to the
last byte of the answer, so time spent waiting in the client for a free connection counts
too (no coordinated omission). ``client_lag`` is how late the client itself began each
request (its own health: a client that cannot keep the schedule says so).

Requests go over a pool of keep-alive HTTP/1.1 connections written with plain asyncio
streams: an HTTP client library's own CPU, on a machine the API shares, would be measured
as the API's latency. Two modes, as the cost-per-task issue asks:

* ``single``: one task per request, ``POST <pipeline>`` with the task's JSON as the body;
* ``batch``: ``--batch`` tasks per request, ``POST <pipeline>/tasks``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.bench.client import batch_body, target_parser, task_data

#: Connections the client may open: enough that the pool is never the queue at the rates
#: asked (1,000 requests a second answered within tens of ms need a few dozen).
MAX_CONNECTIONS = 256


@dataclass(frozen=True, kw_only=True)
class Plan:
    api: str
    key: str
    pipeline_path: str
    mode: str  # "single" or "batch"
    #: Requests per second.
    rate: float
    seconds: float
    #: Tasks per request in ``batch`` mode.
    batch: int = 1000

    @property
    def requests(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass(kw_only=True)
class Summary:
    mode: str
    requests: int = 0
    tasks: int = 0
    offered_per_s: float = 0.0
    answered_per_s: float = 0.0
    #: Answers other than 202, by status (a refused request still has a latency).
    refused: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    client_lag_ms: list[float] = field(default_factory=list)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        """Send one request, read its whole answer; the status code."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the API closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            raise ConnectionResetError("the API asked to close")
        return status

    def close(self) -> None:
        self.writer.close()


class _Pool:
    """Keep-alive connections, opened on demand up to ``MAX_CONNECTIONS``."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        self._opened = 0

    async def take(self) -> _Connection:
        if self._idle.empty() and self._opened < MAX_CONNECTIONS:
            self._opened += 1
            reader, writer = await asyncio.open_connection(self._host, self._port)
            return _Connection(reader, writer)
        return await self._idle.get()

    def give(self, connection: _Connection) -> None:
        self._idle.put_nowait(connection)

    def drop(self, connection: _Connection) -> None:
        connection.close()
        self._opened -= 1

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


def _requests(plan: Plan, host: str) -> list[bytes]:
    """Every request's bytes, built before the clock starts."""
    head = (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    out = []
    for number in range(plan.requests):
        if plan.mode == "single":
            path = plan.pipeline_path
            body = json.dumps(task_data(number), separators=(",", ":")).encode()
        else:
            path = f"{plan.pipeline_path}/tasks"
            body = batch_body(number * plan.batch, plan.batch)
        line = head.format(path=path, host=host, key=plan.key, length=len(body))
        out.append(line.encode() + body)
    return out


async def measure(plan: Plan) -> Summary:
    address = urlsplit(plan.api)
    host, port = address.hostname or "127.0.0.1", address.port or 80
    requests = _requests(plan, host)
    pool = _Pool(host, port)
    summary = Summary(mode=plan.mode, requests=len(requests), offered_per_s=plan.rate)
    loop = asyncio.get_running_loop()

    async def one(request: bytes, due: float) -> None:
        connection = await pool.take()
        summary.client_lag_ms.append((loop.time() - due) * 1000)
        try:
            status = await connection.exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError):
            pool.drop(connection)
            summary.refused["disconnected"] = summary.refused.get("disconnected", 0) + 1
            return
        pool.give(connection)
        summary.latencies_ms.append((loop.time() - due) * 1000)
        if status == 202:
            summary.tasks += 1 if plan.mode == "single" else plan.batch
        else:
            summary.refused[str(status)] = summary.refused.get(str(status), 0) + 1

    started = loop.time() + 0.2
    sending: list[asyncio.Task[None]] = []
    for number, request in enumerate(requests):
        due = started + number / plan.rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        sending.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*sending)
    summary.answered_per_s = round(len(requests) / (loop.time() - started), 1)
    pool.close()
    return summary


def _arguments() -> argparse.Namespace:
    parser = target_parser(__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("single", "batch"), required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--batch", type=int, default=1000, help="tasks per request (batch)")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    plan = Plan(
        api=args.api,
        key=args.key,
        pipeline_path=args.pipeline_path,
        mode=args.mode,
        rate=args.rate,
        seconds=args.seconds,
        batch=args.batch,
    )
    began = time.time()
    summary = asyncio.run(measure(plan))
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps({**asdict(summary), "began_unix": began}))
    partial.rename(args.out)


if __name__ == "__main__":
    main()
