"""The executor: commands through a real /bin/sh, and its gRPC server on a Unix socket."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.infra.process import free_port
from services.worker.command import Command, ExecutorError, HandlerCall
from services.worker.executor import run_command, serve
from services.worker.executor_client import ExecutorClients
from services.worker.settings import ExecutorSettings


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text.split()[0]) if text else None


async def pid_in(path: Path) -> int:
    async with asyncio.timeout(10):
        while (pid := read_pid(path)) is None:
            await asyncio.sleep(0.02)
    return pid


async def gone(pid: int) -> None:
    async with asyncio.timeout(10):
        while alive(pid):
            await asyncio.sleep(0.02)


async def test_exit_code_stdout_head_and_stderr_tail() -> None:
    result = await run_command(
        Command(text="head -c 5000 /dev/zero | tr '\\0' o; seq 1 200 >&2; exit 7"),
        max_stdout_bytes=1000,
        stderr_tail_bytes=20,
    )
    assert result.exit_code == 7 and not result.killed and not result.timed_out
    assert result.stdout == b"o" * 1000 and result.stdout_total_bytes == 5000
    assert result.stderr_tail == b"\n".join(str(n).encode() for n in range(196, 201)) + b"\n"


async def test_the_request_may_ask_for_less_stdout() -> None:
    result = await run_command(
        Command(text="echo 0123456789", max_stdout_bytes=4),
        max_stdout_bytes=1000,
        stderr_tail_bytes=20,
    )
    assert result.stdout == b"0123" and result.stdout_total_bytes == 11


async def test_work_dir_and_env(tmp_path: Path) -> None:
    result = await run_command(
        Command(text='pwd; echo "$GREETING"', work_dir=str(tmp_path), env={"GREETING": "hi"}),
        max_stdout_bytes=1000,
        stderr_tail_bytes=20,
    )
    assert result.stdout == f"{tmp_path}\nhi\n".encode()


async def test_a_signal_is_reported_as_a_shell_would(tmp_path: Path) -> None:
    result = await run_command(
        Command(text="kill -TERM $$"), max_stdout_bytes=10, stderr_tail_bytes=10
    )
    assert (result.exit_code, result.killed, result.signal) == (143, True, 15)


async def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    result = await run_command(
        Command(text=f"sleep 60 & echo $! > {pidfile}; sleep 60", timeout_s=0.5),
        max_stdout_bytes=10,
        stderr_tail_bytes=10,
    )
    assert result.timed_out and result.killed and result.exit_code == 137
    await gone(await pid_in(pidfile))


async def test_nothing_outlives_the_shell(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    async with asyncio.timeout(20):  # the leftover would hold stdout open for 60 s
        result = await run_command(
            Command(text=f"sleep 60 & echo $! > {pidfile}; echo started"),
            max_stdout_bytes=100,
            stderr_tail_bytes=10,
        )
    assert result.exit_code == 0 and result.stdout == b"started\n"
    await gone(await pid_in(pidfile))


async def test_cancelling_the_call_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    running = asyncio.create_task(
        run_command(
            Command(text=f"echo $$ > {pidfile}; exec sleep 60"),
            max_stdout_bytes=10,
            stderr_tail_bytes=10,
        )
    )
    pid = await pid_in(pidfile)
    assert alive(pid)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await gone(pid)


# -- over gRPC ----------------------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are short (107 bytes): pytest's tmp_path may be too long.
    path = Path(tempfile.mkdtemp(prefix="wsx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def executor(socket_dir: Path) -> AsyncIterator[str]:
    listen = f"unix://{socket_dir}/e.sock"
    stopping, now = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        serve(settings=ExecutorSettings(grace_s=0), listen=listen, stopping=stopping, now=now)
    )
    yield listen
    stopping.set()
    await asyncio.wait_for(server, 10)
    assert not (socket_dir / "e.sock").exists()


@pytest.fixture
async def clients(executor: str) -> AsyncIterator[ExecutorClients]:
    clients = ExecutorClients(addresses={"sh": executor}, connect_timeout_s=10)
    await clients.wait_ready()
    yield clients
    await clients.close()


async def test_commands_run_over_grpc(clients: ExecutorClients, tmp_path: Path) -> None:
    result = await clients.run(
        "sh", Command(text="echo out; echo err >&2; exit 4", work_dir=str(tmp_path))
    )
    assert (result.exit_code, result.stdout, result.stderr_tail) == (4, b"out\n", b"err\n")
    slow = await clients.run("sh", Command(text="sleep 30", timeout_s=0.3))
    assert slow.timed_out and slow.killed


async def test_cancelling_the_grpc_call_kills_the_command(
    clients: ExecutorClients, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    call = asyncio.create_task(
        clients.run("sh", Command(text=f"echo $$ > {pidfile}; exec sleep 60", timeout_s=120))
    )
    pid = await pid_in(pidfile)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await gone(pid)


async def test_executor_errors_name_the_executor(clients: ExecutorClients, tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match=r"FAILED_PRECONDITION: cannot start /bin/sh in"):
        await clients.run("sh", Command(text="true", work_dir=str(tmp_path / "missing")))
    with pytest.raises(ExecutorError, match="no address for executor 'ocr'"):
        await clients.run("ocr", Command(text="true"))


async def test_handlers_are_called_over_grpc(clients: ExecutorClients) -> None:
    ok = await clients.call(
        "sh",
        HandlerCall(handler="tests.fixtures.handlers:resize", data=b'{"url": "u"}', timeout_s=30),
    )
    assert ok.ok and b'"url":"u"' in ok.result
    slow = await clients.call(
        "sh", HandlerCall(handler="tests.fixtures.handlers:sleep", data=b'{"s": 60}', timeout_s=1)
    )
    assert slow.timed_out
    with pytest.raises(ExecutorError, match="INVALID_ARGUMENT: 'no-colon' is not a handler"):
        await clients.call("sh", HandlerCall(handler="no-colon", data=b"{}"))
    with pytest.raises(ExecutorError, match="INVALID_ARGUMENT: pool 'fork'"):
        await clients.call("sh", HandlerCall(handler="a:b", data=b"{}", pool="fork"))


async def test_waiting_for_an_executor_that_never_comes_is_bounded(socket_dir: Path) -> None:
    clients = ExecutorClients(addresses={"ghost": f"unix://{socket_dir}/none.sock"})
    with pytest.raises(ExecutorError, match=r"executor 'ghost' at unix://.*none.sock accepted no"):
        await clients.wait_ready(0.3)
    await clients.close()


async def test_after_stopping_the_executor_serves_on_for_its_grace() -> None:
    listen = f"127.0.0.1:{free_port()}"
    stopping, now = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        serve(settings=ExecutorSettings(grace_s=300), listen=listen, stopping=stopping, now=now)
    )
    clients = ExecutorClients(addresses={"tcp": listen}, connect_timeout_s=10)
    try:
        await clients.wait_ready()
        stopping.set()
        await asyncio.sleep(0.1)
        # the agent in the same pod may still need it to finish its tasks
        result = await clients.run("tcp", Command(text="echo still here"))
        assert result.stdout == b"still here\n" and not server.done()
        now.set()
        await asyncio.wait_for(server, 10)
    finally:
        await clients.close()
