"""Entry point of the scheduler process: one replica hosting pipeline grains."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.scheduler.host import SchedulerHost
from services.settings import Settings

log = logging.getLogger("wsched.scheduler")


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SchedulerHost(settings=settings):
        await stop.wait()
        log.info("scheduler stopping: releasing grains")
