"""Python handlers in the executor's pools: real worker processes, no gRPC."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.worker.command import HandlerCall
from services.worker.handlers import HandlerPools, import_handler, invoke

H = "tests.fixtures.handlers"


@pytest.fixture
async def pools() -> AsyncIterator[HandlerPools]:
    pools = HandlerPools(size=2, max_result_bytes=1024)
    yield pools
    pools.close()


def call(name: str, data: object = None, **kwargs: object) -> HandlerCall:
    return HandlerCall(
        handler=f"{H}:{name}",
        data=json.dumps(data).encode() if data is not None else b"",
        **kwargs,  # type: ignore[arg-type]
    )


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_import_handler_says_what_is_wrong() -> None:
    assert import_handler(f"{H}:resize")({"url": "u"})["url"] == "u"
    with pytest.raises(ImportError, match="no attribute"):
        import_handler(f"{H}:missing")
    with pytest.raises(TypeError, match="not a callable"):
        import_handler(f"{H}:NOT_CALLABLE")
    with pytest.raises(ImportError):
        import_handler("no_such_package_here.tasks:run")


def test_invoke_encodes_the_return_value_and_refuses_what_is_not_json() -> None:
    assert invoke(f"{H}:fetch", b'{"url": "u"}', 0).result == b'"fetched u"'
    bad = invoke(f"{H}:not_json", b"{}", 0)
    assert bad.non_retryable and "not JSON" in bad.error
    big = invoke(f"{H}:resize", b'{"url": "' + b"x" * 100 + b'"}', 50)
    assert big.non_retryable and "over the limit of 50" in big.error
    failing = invoke(f"{H}:fail", b'{"a": 1}', 0)
    assert not failing.non_retryable and "ValueError: cannot handle {'a': 1}" in failing.error


async def test_a_process_pool_runs_the_handler_in_another_process_and_reuses_it(
    pools: HandlerPools,
) -> None:
    first = await pools.call(call("resize", {"url": "u"}, timeout_s=30))
    second = await pools.call(call("resize", {"url": "v"}, timeout_s=30))
    assert first.ok and second.ok
    one, two = json.loads(first.result), json.loads(second.result)
    assert one["url"] == "u" and one["pid"] == two["pid"]  # the worker was kept
    import os

    assert one["pid"] != os.getpid()


async def test_the_env_is_set_in_the_worker(pools: HandlerPools) -> None:
    result = await pools.call(call("env", {}, env={"WSCHED_TASK_ID": "t-9"}))
    assert result.result == b'"t-9"'


async def test_a_timeout_kills_the_workers_process_group_and_replaces_it(
    pools: HandlerPools, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    before = json.loads((await pools.call(call("resize", {"url": "u"}))).result)["pid"]
    started = time.monotonic()
    slow = await pools.call(call("sleep", {"s": 60, "pidfile": str(pidfile)}, timeout_s=1.0))
    assert slow.timed_out and not slow.ok
    assert time.monotonic() - started < 20
    child = int(pidfile.read_text())
    for _ in range(50):
        if gone(child) and gone(before):
            break
        await asyncio.sleep(0.1)
    assert gone(child), "the handler's child outlived the timeout"
    after = json.loads((await pools.call(call("resize", {"url": "u"}))).result)["pid"]
    assert after != before  # a fresh worker took the killed one's place


async def test_a_crash_fails_the_call_and_the_next_call_gets_a_fresh_worker(
    pools: HandlerPools,
) -> None:
    crashed = await pools.call(call("crash", {}))
    assert "died (exit code 3)" in crashed.error and not crashed.non_retryable
    assert (await pools.call(call("resize", {"url": "u"}))).ok


async def test_a_cancelled_call_leaves_no_worker_running(pools: HandlerPools) -> None:
    running = asyncio.create_task(pools.call(call("sleep", {"s": 60})))
    await asyncio.sleep(3)  # the worker has started and is sleeping
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (await pools.call(call("resize", {"url": "u"}))).ok


async def test_a_thread_pool_answers_timed_out_but_cannot_stop_the_thread(
    pools: HandlerPools,
) -> None:
    ok = await pools.call(call("fetch", {"url": "u"}, pool="thread"))
    assert ok.result == b'"fetched u"'
    slow = await pools.call(call("sleep", {"s": 1.5}, pool="thread", timeout_s=0.2))
    assert slow.timed_out
