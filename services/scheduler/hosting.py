"""The pipelines a replica hosts: each one's grain handle and forwarder, and the
forwarders of its shards' partitions of the shared topic.

A pipeline with a topic of its own is hosted with its grain active and a ``Forwarder``
reading its topic from the offsets the activation loaded. A pipeline on the shared topic
has no forwarder of its own: its shard's ``ShardForwarder`` routes its records to it
(``route``), hosting it on the spot if it was made ready a moment ago. Its grain is
activated at hosting only if it has work (or when the built-in scaler runs, which scales
what grains publish); otherwise its first record activates it.

``SchedulerHost`` (``host.py``) owns the shards and drives this from placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from actors.pipeline import actor as grain_actor
from actors.pipeline.model import GrainKey
from actors.pipeline.ports import StaleEpoch
from actors.runtime import ActorSystem, GrainId
from services.kafka.shared import SharedKafkaReader
from services.observability import Tracing
from services.placement import pipeline_topic, shard_of
from services.scheduler.directory import Hosting, PipelineDirectory
from services.scheduler.forwarder import Admit, Forwarder, ForwarderStats, Keep
from services.scheduler.handle import GrainHandle
from services.scheduler.shard_forwarder import ShardForwarder, ShardForwarders
from services.scheduler.tracing import traced_admit

log = logging.getLogger("wsched.scheduler")


@dataclass(kw_only=True)
class Hosted:
    grain: GrainId
    #: How the worker API and the forwarder reach the grain.
    handle: GrainHandle
    #: The grain's admission (traced when tracing is on), for its forwarder.
    admit: Admit
    #: The forwarder of a pipeline with a topic of its own, and its task; None for one on
    #: the shared topic (its shard's forwarder feeds it).
    forwarder: Forwarder | None
    task: asyncio.Task[None] | None
    #: (worker, namespace) labels of the seed's KEDA gauge; None if the names are unknown.
    queue_labels: tuple[str, str] | None = None


class PipelineHosting:
    def __init__(
        self,
        *,
        system: ActorSystem,
        directory: PipelineDirectory,
        reader: Callable[[], SharedKafkaReader],
        shard_forwarder: Callable[[int], ShardForwarder],
        keep: Keep,
        tracing: Tracing,
        lazy: bool,
    ) -> None:
        """``reader``: the replica's started shared reader; ``shard_forwarder`` makes the
        forwarder of an owned shard (routing through ``route``); ``lazy``: shared
        pipelines' grains are activated only if they have work (not with the built-in
        scaler)."""
        self._system = system
        self._directory = directory
        self._reader = reader
        self._keep = keep
        self._tracing = tracing
        self._lazy = lazy
        self._hosted: dict[str, Hosted] = {}
        self._shard_forwarders = ShardForwarders(make=shard_forwarder)
        self._shards: frozenset[int] = frozenset()
        self._changes = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # -- what the replica asks -------------------------------------------------------------

    def get(self, pipeline_id: str) -> Hosted | None:
        return self._hosted.get(pipeline_id)

    def pipelines(self) -> list[str]:
        return list(self._hosted)

    def shard_forwarders(self) -> dict[int, ShardForwarder]:
        return self._shard_forwarders.forwarders()

    def forwarders(self) -> dict[str, ForwarderStats]:
        """Every hosted pipeline's forwarding figures (a shared one's from its shard's
        forwarder)."""
        shards = self._shard_forwarders.forwarders()
        stats = {}
        for pipeline_id, hosted in self._hosted.items():
            if hosted.forwarder is not None:
                stats[pipeline_id] = hosted.forwarder.stats
            else:
                shard = shards.get(shard_of(pipeline_id))
                found = shard.pipelines.get(pipeline_id) if shard is not None else None
                stats[pipeline_id] = found or ForwarderStats()
        return stats

    def queue_labels(self) -> dict[str, tuple[str, str]]:
        return {pid: h.queue_labels for pid, h in self._hosted.items() if h.queue_labels}

    # -- placement ---------------------------------------------------------------------------

    async def reconcile(self, shards: Iterable[int]) -> None:
        """Host exactly the ready pipelines of ``shards`` and read their shared partitions."""
        self._shards = frozenset(shards)
        async with self._changes:
            try:
                wanted = await self._directory.ready_pipelines(self._shards)
            except sa.exc.SQLAlchemyError as err:
                log.warning("placement: cannot read pipelines now: %s", err)
                return
            for pipeline_id in set(self._hosted) - set(wanted):
                await self._drop_locked(pipeline_id)
            new = {pid: hosting for pid, hosting in wanted.items() if pid not in self._hosted}
            # A shared pipeline's grain is activated only if it has work now: taking a
            # shard of 10,000 idle pipelines claims and loads none of them.
            shared = [pid for pid, hosting in new.items() if hosting.shared and self._lazy]
            try:
                busy = await self._directory.with_work(shared) if shared else set()
            except sa.exc.SQLAlchemyError as err:
                log.warning("placement: cannot read which pipelines have work: %s", err)
                return
            for pipeline_id, hosting in new.items():
                activate = not (hosting.shared and self._lazy) or pipeline_id in busy
                await self._ensure(pipeline_id, hosting, activate=activate)
            # After the shards' grains, so that their records find them hosted.
            for shard in self._shards - self._shard_forwarders.running():
                self._shard_forwarders.start(shard)

    async def release(self, shards: Iterable[int]) -> None:
        """Stop reading these shards and drop their pipelines (their grains flush)."""
        released = set(shards)
        for shard in released:
            await self._shard_forwarders.stop(shard)
        for pipeline_id in list(self._hosted):
            if shard_of(pipeline_id) in released:
                await self.drop(pipeline_id)
        self._shards -= released

    async def drop(self, pipeline_id: str) -> None:
        async with self._changes:
            await self._drop_locked(pipeline_id)

    async def route(self, pipeline_id: str) -> Admit | None:
        """The admission of a shared pipeline's grain, hosting the pipeline if it was made
        ready a moment ago; None if it is not a ready shared pipeline of an owned shard."""
        hosted = self._hosted.get(pipeline_id)
        if hosted is not None:
            return hosted.admit
        hosting = await self._directory.ready_pipeline(pipeline_id)
        if hosting is None or not hosting.shared or shard_of(pipeline_id) not in self._shards:
            return None
        async with self._changes:
            if pipeline_id not in self._hosted:
                await self._ensure(pipeline_id, hosting, activate=True)
        hosted = self._hosted.get(pipeline_id)
        if hosted is None:
            raise RuntimeError(f"pipeline {pipeline_id}: grain not activated yet")
        return hosted.admit

    # -- hosting one -------------------------------------------------------------------------

    async def _ensure(self, pipeline_id: str, hosting: Hosting, *, activate: bool) -> None:
        """Host the pipeline: its handle, and the forwarder of a topic of its own (which
        resumes from the offsets its grain's activation loads)."""
        grain = grain_actor.grain_id(GrainKey(pipeline_id=pipeline_id))
        offsets: dict[int, int] = {}
        if activate:
            try:
                offsets = grain_actor.unwrap(await self._system.ask(grain, grain_actor.Activate()))
            except Exception as err:  # noqa: BLE001 - retried at the next reconcile
                log.warning(
                    "pipeline %s: grain not activated: %s: %s",
                    pipeline_id,
                    type(err).__name__,
                    err,
                )
                return
        handle = GrainHandle(
            system=self._system, grain=grain, lease_timeout_s=hosting.lease_timeout_s
        )
        admit = (
            traced_admit(handle.admit, tracing=self._tracing, pipeline_id=pipeline_id)
            if self._tracing.enabled
            else handle.admit
        )
        hosted = Hosted(
            grain=grain,
            handle=handle,
            admit=admit,
            forwarder=None,
            task=None,
            queue_labels=hosting.queue_labels,
        )
        self._hosted[pipeline_id] = hosted
        if hosting.shared:
            state = "active" if activate else "inactive until it has work"
            log.info("pipeline %s: hosted on the shared topic, grain %s", pipeline_id, state)
            return
        forwarder = Forwarder(
            consumer=self._reader().view(pipeline_topic(pipeline_id)),
            pipeline_id=pipeline_id,
            partitions=hosting.partitions,
            admit=admit,
            keep=self._keep,
        )
        task = asyncio.create_task(forwarder.run(offsets), name=f"forwarder {pipeline_id}")
        task.add_done_callback(lambda _: self._forwarder_ended(pipeline_id, task))
        hosted.forwarder, hosted.task = forwarder, task
        log.info(
            "pipeline %s: grain active, forwarding %d partition(s)",
            pipeline_id,
            hosting.partitions,
        )

    def _forwarder_ended(self, pipeline_id: str, task: asyncio.Task[None]) -> None:
        hosted = self._hosted.get(pipeline_id)
        if hosted is None or hosted.task is not task or task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, StaleEpoch):
            log.error("pipeline %s: forwarder failed: %r", pipeline_id, error)
        # Fenced or failed: forget the grain; the next reconcile decides again.
        del self._hosted[pipeline_id]
        cleanup = asyncio.get_running_loop().create_task(
            self._system.deactivate(hosted.grain, "forwarder ended")
        )
        # The loop keeps only weak references to tasks: hold it until it is done.
        self._background.add(cleanup)
        cleanup.add_done_callback(self._background.discard)

    async def _drop_locked(self, pipeline_id: str) -> None:
        hosted = self._hosted.pop(pipeline_id, None)
        if hosted is None:
            return
        if hosted.task is not None:
            hosted.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await hosted.task
        await self._system.deactivate(hosted.grain, "revoked")
        log.info("pipeline %s: grain released", pipeline_id)
