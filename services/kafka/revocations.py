"""``wsched.revocations``: tells every API process at once that a tenant's keys changed,
and every scheduler replica that a pipeline's worker token was rotated.

While the database answers, each request checks its key there, so a revoked key is
refused at once everywhere. While it does not, an API process answers from the lookups
it remembers (``services.api.context``), and only this topic can tell it that one of
them no longer holds. A scheduler replica caches worker token digests for half a minute
(``services.scheduler.directory``): a rotation announced here makes it read them again,
so a token rotated out with a short grace is refused within seconds, not at the cache's
expiry. Each process reads the topic from its end, with no consumer group (each needs
every record); a record names the tenant and, for a rotation with a grace period, when
the replaced key stops being valid, or the pipeline whose token was rotated: nothing
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
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
#: Called with the id of a pipeline whose worker token was rotated.
ForgetToken = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class KeysChanged:
    """A tenant's API keys changed; ``until``: the grace end of a rotated-out key."""

    tenant_id: str
    until: dt.datetime | None = None


@dataclass(frozen=True, kw_only=True)
class TokenRotated:
    """A pipeline's worker token was rotated: digests cached for it no longer hold."""

    pipeline_id: str


Revocation = KeysChanged | TokenRotated


def encode(revocation: Revocation) -> bytes:
    """The record's value. A rotated token's record has no ``tenant``: an API process of
    an earlier version skips it as undecodable, never takes it for a key's revocation."""
    body: dict[str, str | None]
    if isinstance(revocation, TokenRotated):
        body = {"pipeline": revocation.pipeline_id}
    else:
        until = revocation.until
        body = {"tenant": revocation.tenant_id, "until": until.isoformat() if until else None}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(value: bytes | None) -> Revocation:
    """The record's revocation; ValueError for anything else."""
    try:
        body = json.loads(value or b"")
        if "pipeline" in body:
            return TokenRotated(pipeline_id=str(body["pipeline"]))
        until = body.get("until")
        return KeysChanged(
            tenant_id=str(body["tenant"]),
            until=dt.datetime.fromisoformat(until) if until else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"undecodable revocation record: {err}") from err


def _keys_to(forget: Forget) -> Callable[[Revocation], None]:
    """What a follower of tenants' keys does with a record: the others are not its own."""

    def heard(revocation: Revocation) -> None:
        if isinstance(revocation, KeysChanged):
            forget(revocation.tenant_id, revocation.until)

    return heard


def _tokens_to(forget: ForgetToken) -> Callable[[Revocation], None]:
    """What a follower of worker tokens does with a record: the others are not its own."""

    def heard(revocation: Revocation) -> None:
        if isinstance(revocation, TokenRotated):
            forget(revocation.pipeline_id)

    return heard


class RotationFeed(Protocol):
    async def follow_rotations(self, forget: ForgetToken) -> None:
        """Call ``forget`` with the pipeline of each announced worker token rotation;
        runs until cancelled."""
        ...


class Revocations(RotationFeed, Protocol):
    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        """Tell every API process (this one included) that the tenant's keys changed;
        ``until``: the grace end of a rotated-out key. Raises ``BrokerUnavailable``."""
        ...

    async def announce_rotation(self, pipeline_id: str) -> None:
        """Tell every scheduler replica that the pipeline's worker token was rotated.
        Raises ``BrokerUnavailable``."""
        ...

    async def follow(self, forget: Forget) -> None:
        """Call ``forget`` with each announced tenant id; runs until cancelled."""
        ...


class MemoryRevocations:
    """The in-memory twin: every follower of this object hears every announcement."""

    def __init__(self) -> None:
        self._followers: list[Callable[[Revocation], None]] = []
        self.announced: list[str] = []
        self.rotated: list[str] = []

    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        self.announced.append(tenant_id)
        self._tell(KeysChanged(tenant_id=tenant_id, until=until))

    async def announce_rotation(self, pipeline_id: str) -> None:
        self.rotated.append(pipeline_id)
        self._tell(TokenRotated(pipeline_id=pipeline_id))

    def _tell(self, revocation: Revocation) -> None:
        for heard in list(self._followers):
            heard(revocation)

    async def follow(self, forget: Forget) -> None:
        await self._follow(_keys_to(forget))

    async def follow_rotations(self, forget: ForgetToken) -> None:
        await self._follow(_tokens_to(forget))

    async def _follow(self, heard: Callable[[Revocation], None]) -> None:
        self._followers.append(heard)
        try:
            await asyncio.Event().wait()
        finally:
            self._followers.remove(heard)


@dataclass
class _Resume:
    """The offset a follower reads next once it reads again; None: the topic's end."""

    next: int | None = None


class KafkaRevocationReader:
    """Follows the topic from its end; a scheduler replica needs this half only."""

    def __init__(self, *, bootstrap: str, admin: KafkaTopicAdmin, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._admin = admin
        self._client_id = client_id

    async def follow(self, forget: Forget) -> None:
        await self._follow(_keys_to(forget))

    async def follow_rotations(self, forget: ForgetToken) -> None:
        await self._follow(_tokens_to(forget))

    async def _follow(self, heard: Callable[[Revocation], None]) -> None:
        # Resumed where it stopped after a failure: a record produced meanwhile counts.
        resume = _Resume()
        pause = 0.5
        while True:
            try:
                await self._follow_once(heard, resume)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the broker's many errors; read again
                log.warning("reading %s failed, again in %.1f s: %s", REVOCATIONS_TOPIC, pause, err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE_S)

    async def _follow_once(self, heard: Callable[[Revocation], None], resume: _Resume) -> None:
        await self._admin.ensure_topic(REVOCATIONS_TOPIC, partitions=1, retention_ms=_RETENTION_MS)
        partition = TopicPartition(REVOCATIONS_TOPIC, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=200,
            client_id=self._client_id,
        )
        try:  # started inside: a cancel during start must still stop it
            await consumer.start()
            consumer.assign([partition])
            if resume.next is None:
                await consumer.seek_to_end(partition)
            else:
                consumer.seek(partition, resume.next)
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for record in batches.get(partition, []):
                    resume.next = record.offset + 1
                    try:
                        revocation = decode(record.value)
                    except ValueError as err:
                        log.warning("skipped %s:%d: %s", REVOCATIONS_TOPIC, record.offset, err)
                        continue
                    heard(revocation)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


class KafkaRevocations(KafkaRevocationReader):
    """What an API process uses: it announces changes and follows tenants' keys."""

    def __init__(self, *, bootstrap: str, admin: KafkaTopicAdmin, producer: KafkaProducer) -> None:
        super().__init__(bootstrap=bootstrap, admin=admin, client_id="wsched-api-revocations")
        self._producer = producer

    async def announce(self, tenant_id: str, *, until: dt.datetime | None = None) -> None:
        await self._send(tenant_id, KeysChanged(tenant_id=tenant_id, until=until))

    async def announce_rotation(self, pipeline_id: str) -> None:
        await self._send(pipeline_id, TokenRotated(pipeline_id=pipeline_id))

    async def _send(self, key: str, revocation: Revocation) -> None:
        record = Record(topic=REVOCATIONS_TOPIC, key=key.encode(), value=encode(revocation))
        await self._producer.send([record])
