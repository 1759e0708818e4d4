"""The scheduler process stops within its shutdown timeout, whatever its host's stop does."""

from __future__ import annotations

import asyncio
import time

from services.scheduler.main import serve
from services.settings import Settings


class Host:
    def __init__(self, *, stop_takes_s: float) -> None:
        self.stop_takes_s = stop_takes_s
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        await asyncio.sleep(self.stop_takes_s)
        self.stopped = True


async def run(host: Host, timeout_s: float) -> float:
    stop = asyncio.Event()
    settings = Settings(shutdown_timeout_s=timeout_s)
    served = asyncio.create_task(serve(settings, make_host=lambda _s: host, stop=stop))
    await asyncio.sleep(0.05)
    assert host.started and not served.done()
    began = time.monotonic()
    stop.set()
    await asyncio.wait_for(served, 10)
    return time.monotonic() - began


async def test_a_stop_that_hangs_is_cut_at_the_timeout() -> None:
    """Kafka and TiDB away, the grains' last flushes never end: the process exits anyway."""
    host = Host(stop_takes_s=3600)
    took = await run(host, timeout_s=0.3)
    assert 0.3 <= took < 2 and not host.stopped


async def test_a_stop_within_the_timeout_completes() -> None:
    host = Host(stop_takes_s=0.1)
    took = await run(host, timeout_s=5)
    assert host.stopped and took < 2
