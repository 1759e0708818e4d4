"""Entry point of the scheduler process: one replica hosting pipeline grains."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from services.scheduler.host import SchedulerHost
from services.settings import Settings

log = logging.getLogger("wsched.scheduler")


class Host(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve(
    settings: Settings,
    *,
    make_host: Callable[[Settings], Host] = lambda settings: SchedulerHost(settings=settings),
    stop: asyncio.Event | None = None,
) -> None:
    """Run a replica until SIGINT or SIGTERM (or ``stop``), then stop it within
    ``shutdown_timeout_s``: past that, exit as a crash would. A new owner then takes the
    grains over from TiDB (leases not flushed run again), which beats a process that
    cannot finish its stop while Kafka or TiDB is away and never exits."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    host = make_host(settings)
    await host.start()
    try:
        await stop.wait()
        log.info("scheduler stopping: releasing grains")
    finally:
        try:
            async with asyncio.timeout(settings.shutdown_timeout_s):
                await host.stop()
        except TimeoutError:
            log.error(
                "scheduler stop took longer than %.0fs (is Kafka or TiDB away?): exiting "
                "without it; the grains' next owners take over from the store",
                settings.shutdown_timeout_s,
            )
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
