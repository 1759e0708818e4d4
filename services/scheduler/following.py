"""How a scheduler replica follows placement: the shards it owns and the changes to them.

One consumer group (static membership, the replica's stable name) over the placement
topic, one partition per shard: a partition assigned is a shard to host, one revoked a
shard to release. The records on it are hints that a pipeline of a shard was created,
changed or deleted; a rescan every ``rescan_s`` catches any hint that was lost. The
replica (:class:`Placed`) does the hosting; this module only tells it what changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from protos.wsched.v1 import events_pb2
from services.placement import PLACEMENT_TOPIC

log = logging.getLogger("wsched.scheduler")

#: Pauses between attempts to join the placement group: the first, and the cap.
_JOIN_RETRY_FIRST_S = 0.5
_JOIN_RETRY_MAX_S = 10.0


class Placed(Protocol):
    """The replica, as placement drives it."""

    def owns(self, shard: int) -> bool: ...

    async def take_shards(self, shards: set[int]) -> None:
        """Note the shards assigned (quickly: the follower reconciles after)."""
        ...

    async def release_shards(self, shards: set[int]) -> None: ...

    async def reconcile(self) -> None:
        """Host exactly the ready pipelines of the owned shards."""
        ...

    async def drop(self, pipeline_id: str) -> None: ...

    def changed(self, pipeline_id: str) -> None:
        """A pipeline's settings may have changed (its scaling policy is read again)."""
        ...


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revoked shards are released before the group goes on (their grains flush, so the
    new owner finds them stored; aiokafka keeps heartbeating during that listener).
    Assigned shards are only noted, and hosted by the follower's loop after the
    rebalance: aiokafka sends no heartbeat until the assignment listener returns, and
    hosting a shard's pipelines can take longer than the session timeout (a replica
    taking over 550 pipelines with topics of their own hosted for 45 s, was dropped from
    the group, and took them over again, for ever)."""

    def __init__(self, replica: Placed) -> None:
        self._replica = replica
        #: Assigned shards not hosted yet: the loop reconciles.
        self.due = False
        #: The loop's reconcile in flight, which a revocation cancels first.
        self.reconciling: asyncio.Task[None] | None = None

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.reconciling is not None and not self.reconciling.done():
            self.reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reconciling
        await self._replica.release_shards({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._replica.take_shards({tp.partition for tp in assigned})
        self.due = True


class PlacementFollower:
    def __init__(
        self,
        *,
        replica: Placed,
        bootstrap: str,
        group: str,
        member: str,
        rescan_s: float,
    ) -> None:
        """``group``: the placement group; ``member``: the replica's stable name."""
        self._replica = replica
        self._bootstrap = bootstrap
        self._group = group
        self._member = member
        self._rescan_s = rescan_s

    async def run(self) -> None:
        """Join the placement group and follow it, for the life of the replica.

        Joining is retried: a replica started while Kafka is away (or restarting) would
        otherwise live on without shards, serving nothing and saying nothing until it
        stopped (the chaos soak found one). Each failure is logged and the pause is
        capped; ``/readyz`` stays red until the replica has joined.
        """
        pause_s = _JOIN_RETRY_FIRST_S
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
            except KafkaError as err:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                log.warning("placement: cannot join (%r); again in %.1fs", err, pause_s)
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, _JOIN_RETRY_MAX_S)
                continue
            try:
                await self._follow(consumer)
            finally:
                await consumer.stop()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            group_instance_id=self._member,
            auto_offset_reset="latest",
            # Placement records are hints (a rescan follows every rebalance), so their
            # offsets are never committed: an auto-commit at stop retried for ever while
            # the group was rebalancing and the replica's stop never ended.
            enable_auto_commit=False,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
        )

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        listener = _Rebalance(self._replica)
        consumer.subscribe([PLACEMENT_TOPIC], listener=listener)
        loop = asyncio.get_running_loop()
        rescan_at = loop.time() + self._rescan_s
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            records = [record.value for batch in batches.values() for record in batch]
            if records:
                await self.apply(records)
            if listener.due or loop.time() >= rescan_at:
                listener.due = False
                rescan_at = loop.time() + self._rescan_s
                await self._reconcile(listener)

    async def _reconcile(self, listener: _Rebalance) -> None:
        """Reconcile as a task a revocation may cancel (the next assignment reconciles
        again); the follower's own cancellation cancels it too."""
        task = listener.reconciling = asyncio.ensure_future(self._replica.reconcile())
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.cancelled():
            task.result()

    async def apply(self, records: Sequence[bytes | None]) -> None:
        """Apply a fetch's placement records: drops one by one, and one reconcile for all
        the others (a thousand pipelines created together cost one scan, not a thousand)."""
        rescan = False
        for raw in records:
            event = events_pb2.PlacementEvent()
            try:
                event.ParseFromString(raw or b"")
            except Exception:  # noqa: BLE001 - a bad placement record only delays a rescan
                log.warning("ignored an undecodable placement record")
                continue
            if not self._replica.owns(event.shard):
                continue
            self._replica.changed(event.pipeline_id)
            if event.kind == events_pb2.PlacementEvent.KIND_DELETED:
                await self._replica.drop(event.pipeline_id)
            else:
                rescan = True
        if rescan:
            await self._replica.reconcile()
