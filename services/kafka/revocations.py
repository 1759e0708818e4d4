"""``wsched.revocations``: tells every API process at once that a tenant's keys changed.

While the database answers, each request checks its key there, so a revoked key is
refused at once everywhere. While it does not, an API process answers from the lookups
it remembers (``services.api.context``), and only this topic can tell it that one of
them no longer holds. Each process reads it from its end, with no consumer group (each
needs every record); a record names the tenant and, for a rotation with a grace period,
when the replaced key stops being valid: nothing secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.kafka.admin import KafkaTopicAdmin
from services.kafka.producer import KafkaProducer, Record

log = logging.getLogger("wsched.kafka.revocations")

REVOCATIONS_TOPIC = "wsched.revocations"
#: A process that was away longer than this has restarted, remembering nothing.
_RETENTION_MS = 3_600_000
#: The longest pause between attempts to read the topic again after a failure.
_MAX_PAUSE_S = 5.0

#: Called with the tenant's id and, after a rotation with a grace period, the end of it
#: (None: none of the tenant's keys remembered so far holds any more).
Forget = Callable[[str, dt.datetime | None], None]


def encode(tenant_id: str, until: dt.datetime | None) -> bytes:
    body = {"tenant": tenant_id, "until": until.isoformat() if until else None}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes | None) -> tuple[str, dt.datetime | None]:
    """The record's tenant and grace end; ValueError for anything else."""
    try:
        body = json.loads(value or b"")
        until = body.get("until")
        return str(body["tenant"]), dt.datetime.fromisoformat(until) if until else None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"undecodable revocation record: {err}") from err


class Revocations(Protocol):
    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        """Tell every API process (this one included) that the tenant's keys changed;
        ``until``: the grace end of a rotated-out key. Raises ``BrokerUnavailable``."""
        ...

    async def follow(self, forget: Forget) -> None:
        """Call ``forget`` with each announced tenant id; runs until cancelled."""
        ...


class MemoryRevocations:
    """The in-memory twin: every follower of this object hears every announcement."""

    def __init__(self) -> None:
        self._followers: list[Forget] = []
        self.announced: list[str] = []

    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        self.announced.append(tenant_id)
        for forget in list(self._followers):
            forget(tenant_id, until)

    async def follow(self, forget: Forget) -> None:
        self._followers.append(forget)
        try:
            await asyncio.Event().wait()
        finally:
            self._followers.remove(forget)


class KafkaRevocations:
    def __init__(self, *, bootstrap: str, admin: KafkaTopicAdmin, producer: KafkaProducer) -> None:
        self._bootstrap = bootstrap
        self._admin = admin
        self._producer = producer
        self._next: int | None = None

    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        record = Record(
            topic=REVOCATIONS_TOPIC, key=tenant_id.encode(), value=encode(tenant_id, until)
        )
        await self._producer.send([record])

    async def follow(self, forget: Forget) -> None:
        # Resumed where it stopped after a failure: a record produced meanwhile counts.
        pause = 0.5
        while True:
            try:
                await self._follow_once(forget)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the broker's many errors; read again
                log.warning("reading %s failed, again in %.1f s: %s", REVOCATIONS_TOPIC, pause, err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE_S)

    async def _follow_once(self, forget: Forget) -> None:
        await self._admin.ensure_topic(REVOCATIONS_TOPIC, partitions=1, retention_ms=_RETENTION_MS)
        partition = TopicPartition(REVOCATIONS_TOPIC, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=200,
            client_id="wsched-api-revocations",
        )
        try:  # started inside: a cancel during start must still stop it
            await consumer.start()
            consumer.assign([partition])
            if self._next is None:
                await consumer.seek_to_end(partition)
            else:
                consumer.seek(partition, self._next)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for record in batches.get(partition, []):
                    self._next = record.offset + 1
                    try:
                        tenant_id, until = decode(record.value)
                    except ValueError as err:
                        log.warning("skipped %s:%d: %s", REVOCATIONS_TOPIC, record.offset, err)
                        continue
                    forget(tenant_id, until)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
