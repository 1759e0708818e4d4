"""Running a process's event loop: uvloop where it is installed, else asyncio's own.

The API has run on uvloop since uvicorn picks it (measured then: 4 % less API CPU for
single submits, 9 % for batches). The scheduler replica and the worker agent start
their loops here so they run on it too; grpc.aio, aiokafka and the
thread-pool hand-offs of the stores work on any asyncio loop. Not the executor: libuv
spawns children with fork(), and shells forked beside gRPC's threads crashed (SIGSEGV
between fork and exec, one task in a few hundred under ``wsched bench-worker``), where
asyncio's own subprocesses use vfork.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: asyncio's own loop
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop of ``loop_factory``."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
