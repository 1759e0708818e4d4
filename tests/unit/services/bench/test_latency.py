"""The open-loop submit latency client against a small HTTP server of the test's own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from services.bench.latency import Plan, measure

Handler = Callable[[bytes, bytes], Awaitable[tuple[int, bytes]]]


@asynccontextmanager
async def server(handle: Handler) -> AsyncIterator[tuple[str, list[tuple[bytes, bytes]]]]:
    """An HTTP/1.1 keep-alive server answering each request with ``handle(line, body)``;
    yields its URL and the requests it got."""
    seen: list[tuple[bytes, bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                length = 0
                while (header := await reader.readline()) != b"\r\n":
                    name, _, value = header.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                seen.append((line, body))
                status, answer = await handle(line, body)
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        listener.close()


def plan(api: str, **changes: object) -> Plan:
    base: dict[str, object] = {
        "api": api,
        "key": "k",
        "pipeline_path": "/api/applications/a/pipelines/p",
        "mode": "single",
        "rate": 200.0,
        "seconds": 0.25,
    }
    return Plan(**{**base, **changes})  # type: ignore[arg-type]


async def test_single_submits_post_each_task_to_the_pipeline_and_time_the_answers() -> None:
    async def slow(_line: bytes, _body: bytes) -> tuple[int, bytes]:
        await asyncio.sleep(0.02)
        return 202, b'{"id":"x"}'

    async with server(slow) as (api, seen):
        summary = await measure(plan(api))
    assert summary.requests == 50 and summary.tasks == 50 and not summary.refused
    assert {line for line, _ in seen} == {b"POST /api/applications/a/pipelines/p HTTP/1.1\r\n"}
    assert all(len(json.dumps(json.loads(body), separators=(",", ":"))) == 100 for _, body in seen)
    assert len(summary.latencies_ms) == 50
    assert min(summary.latencies_ms) >= 20


async def test_batches_go_to_the_tasks_route_and_refusals_are_counted() -> None:
    answers = iter([202, 429, 202, 503])

    async def mixed(_line: bytes, _body: bytes) -> tuple[int, bytes]:
        return next(answers), b"{}"

    async with server(mixed) as (api, seen):
        summary = await measure(plan(api, mode="batch", batch=10, rate=8.0, seconds=0.5))
    assert [line for line, _ in seen] == [
        b"POST /api/applications/a/pipelines/p/tasks HTTP/1.1\r\n"
    ] * 4
    assert [len(json.loads(body)["tasks"]) for _, body in seen] == [10] * 4
    assert summary.tasks == 20 and summary.refused == {"429": 1, "503": 1}


async def test_a_slow_server_shows_its_queue_open_loop() -> None:
    """A server that takes one request at a time, 20 ms each (50 a second), offered 100 a
    second for half a second: the queue grows, and the latency from each request's due
    time shows it. A closed loop would have waited and shown 20 ms throughout."""
    one_at_a_time = asyncio.Lock()

    async def serial(_line: bytes, _body: bytes) -> tuple[int, bytes]:
        async with one_at_a_time:
            await asyncio.sleep(0.02)
        return 202, b"{}"

    async with server(serial) as (api, _seen):
        summary = await measure(plan(api, rate=100.0, seconds=0.5))
    assert summary.tasks == 50
    assert max(summary.latencies_ms) > 300
    # The client itself kept the schedule: it opened connections rather than wait.
    assert max(summary.client_lag_ms) < 100
