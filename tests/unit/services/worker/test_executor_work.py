"""The agent's runs and calls over one ``Work`` stream per executor: many items to a
message, each answered (or stopped) as its unary call would be."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from protos.wsched.v1 import executor_pb2, executor_pb2_grpc
from services.worker.command import Command, ExecutorError, HandlerCall
from services.worker.executor import ExecutorService, serve
from services.worker.executor_client import ExecutorClients
from services.worker.settings import ExecutorSettings
from tests.unit.services.worker.test_executor import alive, gone, pid_in


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wsw", dir="/tmp"))  # socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


class _Counting(ExecutorService):
    """The executor, counting the messages its streams receive and the unary calls."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.messages = 0
        self.items = 0
        self.unary = 0

    async def Run(
        self, request: executor_pb2.RunRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.RunResponse:
        self.unary += 1
        return await super().Run(request, context)

    async def Work(
        self,
        requests: AsyncIterator[executor_pb2.WorkRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[executor_pb2.WorkResponse]:
        async def counted() -> AsyncIterator[executor_pb2.WorkRequest]:
            async for request in requests:
                self.messages += 1
                self.items += len(request.items)
                yield request

        async for response in super().Work(counted(), context):
            yield response


class _Older(ExecutorService):
    """An executor from before ``Work``: the generated servicer answers UNIMPLEMENTED."""

    Work = executor_pb2_grpc.ExecutorServicer.Work  # type: ignore[assignment]


async def _server(service: ExecutorService, listen: str) -> grpc.aio.Server:
    server = grpc.aio.server()
    executor_pb2_grpc.add_ExecutorServicer_to_server(service, server)
    server.add_insecure_port(listen)
    await server.start()
    return server


async def test_items_that_start_together_share_messages(socket_dir: Path) -> None:
    listen = f"unix://{socket_dir}/c.sock"
    service = _Counting(settings=ExecutorSettings(grace_s=0))
    server = await _server(service, listen)
    clients = ExecutorClients(addresses={"sh": listen}, connect_timeout_s=10)
    try:
        results = await asyncio.gather(
            *(clients.run("sh", Command(text=f"echo {n}")) for n in range(40))
        )
        assert [r.stdout for r in results] == [f"{n}\n".encode() for n in range(40)]
        assert service.items == 40 and service.unary == 0
        assert service.messages < 10, service.messages  # not one message per item
        calls = await asyncio.gather(
            *(
                clients.call(
                    "sh",
                    HandlerCall(
                        handler="tests.fixtures.handlers:resize", data=b'{"url": "u%d"}' % n
                    ),
                )
                for n in range(8)
            )
        )
        assert all(c.ok and b'"url":"u%d"' % n in c.result for n, c in enumerate(calls))
        # A refusal is the item's alone: the others on the stream go on.
        with pytest.raises(ExecutorError, match="INVALID_ARGUMENT: the command is empty"):
            await clients.run("sh", Command(text="  "))
        assert (await clients.run("sh", Command(text="echo after"))).stdout == b"after\n"
    finally:
        await clients.close()
        await server.stop(grace=None)
        service.kill_all()


async def test_closing_the_stream_kills_what_runs_on_it(socket_dir: Path) -> None:
    listen = f"unix://{socket_dir}/k.sock"
    stopping, now = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        serve(settings=ExecutorSettings(grace_s=0), listen=listen, stopping=stopping, now=now)
    )
    clients = ExecutorClients(addresses={"sh": listen}, connect_timeout_s=10)
    pidfile = socket_dir / "pid"
    try:
        running = asyncio.create_task(
            clients.run("sh", Command(text=f"echo $$ > {pidfile}; exec sleep 60", timeout_s=120))
        )
        pid = await pid_in(pidfile)
        assert alive(pid)
        await clients.close()  # the agent goes away: its stream ends
        with pytest.raises(ExecutorError, match="closed the stream"):
            await running
        await gone(pid)
    finally:
        stopping.set()
        await asyncio.wait_for(server, 10)


async def test_an_executor_that_restarts_fails_what_it_ran_and_serves_the_next(
    socket_dir: Path,
) -> None:
    listen = f"unix://{socket_dir}/r.sock"
    first = ExecutorService(settings=ExecutorSettings(grace_s=0))
    server = await _server(first, listen)
    clients = ExecutorClients(addresses={"sh": listen}, connect_timeout_s=10)
    try:
        running = asyncio.create_task(clients.run("sh", Command(text="sleep 30", timeout_s=60)))
        await asyncio.sleep(0.3)
        await server.stop(grace=None)
        first.kill_all()
        with pytest.raises(ExecutorError, match=r"executor 'sh' at unix://.*r.sock: "):
            await running
        second = ExecutorService(settings=ExecutorSettings(grace_s=0))
        server = await _server(second, listen)
        assert (await clients.run("sh", Command(text="echo back"))).stdout == b"back\n"
    finally:
        await clients.close()
        await server.stop(grace=None)


async def test_an_older_executor_is_called_unary(socket_dir: Path) -> None:
    listen = f"unix://{socket_dir}/o.sock"
    service = _Older(settings=ExecutorSettings(grace_s=0))
    server = await _server(service, listen)
    clients = ExecutorClients(addresses={"sh": listen}, connect_timeout_s=10)
    try:
        results = await asyncio.gather(
            *(clients.run("sh", Command(text=f"echo {n}")) for n in range(5))
        )
        assert [r.stdout for r in results] == [f"{n}\n".encode() for n in range(5)]
        with pytest.raises(ExecutorError, match="INVALID_ARGUMENT: pool 'fork'"):
            await clients.call("sh", HandlerCall(handler="a:b", data=b"{}", pool="fork"))
    finally:
        await clients.close()
        await server.stop(grace=None)
