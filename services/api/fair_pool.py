"""The API's database calls, shared fairly among its callers.

Store calls are blocking, so they run in worker threads. ``asyncio.to_thread`` hands
them to one first-come, first-served pool per process: a tenant sending many requests
at once queues its calls ahead of everyone else's, and another tenant's single lookup
waits behind all of them. Here a call that finds every thread busy waits in its
caller's own queue, and each thread freed goes to the callers in turn (round robin), so
a caller with one call waits for at most one call of each other caller, whatever their
backlog. The caller is the request's credential (set by :class:`FairShare`); calls made
outside a request (the reconciler's) share one queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from services.api.ui.session import COOKIE

P = ParamSpec("P")
R = TypeVar("R")

#: Who the current request is, as a fairness key (a hash of its credential; 0: nobody).
CALLER: contextvars.ContextVar[int] = contextvars.ContextVar("wsched_caller", default=0)
#: Threads for store calls, as many as asyncio's default pool has.
WORKERS = min(32, (os.cpu_count() or 1) + 4)


class FairPool:
    """``workers`` slots on one event loop, handed out round robin among callers."""

    def __init__(self, *, executor: ThreadPoolExecutor, workers: int) -> None:
        self._executor = executor
        self._free = workers
        self._queues: OrderedDict[int, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        await self._slot(CALLER.get())
        try:
            call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._release()

    async def _slot(self, caller: int) -> None:
        if self._free > 0 and not self._queues:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(caller, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            raise

    def _release(self) -> None:
        """Hand the freed slot to the next caller in turn; the caller goes to the back."""
        while self._queues:
            caller, queue = next(iter(self._queues.items()))
            waiter = queue.popleft()
            if queue:
                self._queues.move_to_end(caller)
            else:
                del self._queues[caller]
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                return
        self._free += 1


_EXECUTOR = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="wsched-db")
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FairPool] = weakref.WeakKeyDictionary()


def pool() -> FairPool:
    """The running loop's pool (one per loop: a waiter belongs to its loop; the threads
    are the process's)."""
    loop = asyncio.get_running_loop()
    found = _POOLS.get(loop)
    if found is None:
        found = _POOLS[loop] = FairPool(executor=_EXECUTOR, workers=WORKERS)
    return found


class FairShare:
    """ASGI middleware: the request's credential (its bearer key or session cookie) is
    its caller for the database pool, so each tenant's calls queue apart."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = CALLER.set(_caller(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(token)


def _caller(scope: Scope) -> int:
    headers = dict(scope["headers"])
    credential = headers.get(b"authorization")
    if credential is None:
        cookies = headers.get(b"cookie", b"")
        start = cookies.find(COOKIE.encode() + b"=")
        credential = cookies[start:].split(b";", 1)[0] if start >= 0 else b""
    return hash(credential) if credential else 0
