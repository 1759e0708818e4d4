"""Entry point of the scheduler process.

At this stage it only verifies its dependencies and idles until told to stop; the grains,
forwarders and the gRPC worker service are hosted here as they land.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import sqlalchemy as sa

from services.health import check_database, check_kafka
from services.settings import Settings

log = logging.getLogger("wsched.scheduler")


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    engine = sa.create_engine(settings.effective_database_url(), pool_pre_ping=True)
    try:
        for check in (await check_kafka(settings.kafka_bootstrap), check_database(engine)):
            level = logging.INFO if check.ok else logging.WARNING
            log.log(level, "%s reachable=%s %s", check.name, check.ok, check.detail)
        log.info("scheduler started")
        await stop.wait()
        log.info("scheduler stopping")
    finally:
        engine.dispose()
