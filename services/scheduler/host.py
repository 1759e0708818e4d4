"""A scheduler replica: owns shards of the placement space, hosts their pipelines' grains.

Placement (``following.py``): one consumer group over the placement topic, one partition
per shard. The owner of a shard activates the grains of the shard's ready pipelines, runs
their forwarders and serves their workers over gRPC.
Revoking a shard stops its forwarders and deactivates its grains (which flush); the new
owner claims them with a higher epoch, which fences any write the old one still tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import grpc
import sqlalchemy as sa
import uvicorn
from prometheus_client import CollectorRegistry

from actors.pipeline import actor as grain_actor
from actors.pipeline.model import GrainKey, GrainSnapshot
from actors.pipeline.ports import StaleEpoch
from actors.runtime import ActorContext, ActorSystem, GrainId, KindConfig, KindStats
from protos.wsched.v1 import worker_pb2_grpc
from services.kafka.admin import KafkaTopicAdmin, TopicError
from services.kafka.event_publisher import KafkaEventPublisher
from services.kafka.shared import ReaderOfItsOwn, SharedKafkaReader
from services.observability import setup_tracing
from services.placement import SHARED_TOPIC, pipeline_topic, shard_of
from services.scheduler.directory import Hosting, PipelineDirectory
from services.scheduler.following import PlacementFollower
from services.scheduler.forwarder import Admit, Forwarder, ForwarderStats
from services.scheduler.handle import GrainHandle
from services.scheduler.metrics import GrainMetrics, ScalerCollector, SchedulerCollector, http_app
from services.scheduler.scaler import KubePort, build_scaler, hosted_workloads
from services.scheduler.schedule_sync import differing, every
from services.scheduler.shard_forwarder import ShardForwarder, ShardForwarders, ShardStats
from services.scheduler.tracing import traced_admit
from services.scheduler.worker_api import Limits, LocalGrain, WorkerService
from services.settings import Settings
from services.store.engine import make_engine
from services.store.purge import needs_purge, purge_forever
from services.store.quarantine import Quarantined, SqlQuarantine
from services.store.shard_offsets import SqlShardOffsets
from services.store.tasks import SqlTaskStore

log = logging.getLogger("wsched.scheduler")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(kw_only=True)
class _Hosted:
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


#: Where the grains' shared consumer commits its offsets (for Kafka's lag tooling only:
#: the store's offsets are what a grain resumes from).
GRAINS_GROUP = "wsched.grains"


class SchedulerHost:
    """Use as ``async with SchedulerHost(settings=...) as host``."""

    def __init__(
        self,
        *,
        settings: Settings,
        timing: grain_actor.Timing | None = None,
        rescan_s: float = 10.0,
        kube: KubePort | None = None,
        schedule_resync_s: float = 30.0,
    ) -> None:
        """``kube``: the built-in scaler's Kubernetes calls (tests inject one); only used
        with ``autoscaler == "builtin"``. ``schedule_resync_s``: how often the replica
        compares its grains' schedules with the store (in one read for all of them), in
        case a ``ScheduleChanged`` record was never produced."""
        if not settings.kafka_bootstrap:
            raise ValueError("WSCHED_KAFKA_BOOTSTRAP must be set for the scheduler")
        self._settings = settings
        self._tracing = setup_tracing(
            service="wsched-scheduler",
            endpoint=settings.otlp_endpoint,
            sample_ratio=settings.trace_sample_ratio,
        )
        self._bootstrap = settings.kafka_bootstrap
        self._address = settings.advertised_grpc()
        # The replica compares every grain's schedule versions in one read, so that an
        # idle pipeline's grain does not read its own every 30 s.
        idle_s = settings.grain_idle_timeout_s
        self._timing = dataclasses.replace(
            timing or grain_actor.Timing(),
            schedule_resync_s=None,
            deactivate_after_s=idle_s if idle_s > 0 else None,
        )
        self._schedule_resync_s = schedule_resync_s
        self._rescan_s = rescan_s
        self._engine = make_engine(settings.effective_database_url())
        self._store = SqlTaskStore(engine=self._engine, clock=_utcnow)
        self._quarantine = SqlQuarantine(engine=self._engine)
        self._shard_offsets = SqlShardOffsets(engine=self._engine, clock=_utcnow)
        self._directory = PipelineDirectory(engine=self._engine, window_tasks=settings.window_tasks)
        self._system = ActorSystem()
        self._system.register(
            grain_actor.KIND, self._make_grain, config=KindConfig(idle_timeout_s=None)
        )
        self._hosted: dict[str, _Hosted] = {}
        #: The forwarders of the owned shards' partitions of the shared topic.
        self._shard_forwarders = ShardForwarders(
            make=lambda shard: ShardForwarder(
                shard=shard,
                consumer=self._started_reader().view(SHARED_TOPIC),
                catch_up=lambda: ReaderOfItsOwn(bootstrap=self._bootstrap, topic=SHARED_TOPIC),
                offsets=self._shard_offsets,
                owner=self._address,
                route=self._route,
                keep=self._keep,
            )
        )
        self._snapshots: dict[GrainKey, GrainSnapshot] = {}
        self.registry = CollectorRegistry()
        self._grain_metrics = GrainMetrics(self.registry)
        self.registry.register(SchedulerCollector(self))
        self._events = KafkaEventPublisher(
            bootstrap=self._bootstrap, on_drop=self._grain_metrics.events_dropped.inc
        )
        self._scaler = build_scaler(
            settings=settings,
            engine=self._engine,
            workloads=lambda: hosted_workloads(self.snapshots(), self.queue_labels()),
            kube_port=kube,
        )
        if self._scaler is not None:
            self.registry.register(ScalerCollector(self._scaler))
        self._joined = False
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._shards: set[int] = set()
        self._changes = asyncio.Lock()
        self._placement: asyncio.Task[None] | None = None
        self._purge: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._server: grpc.aio.Server | None = None
        self._reader: SharedKafkaReader | None = None
        self.grpc_port = 0

    def _make_grain(self, key: str, context: ActorContext) -> grain_actor.PipelineActor:
        grain_key = GrainKey.parse(key)
        hosted = self._hosted.get(grain_key.pipeline_id)
        if hosted is not None:
            hosted.handle.activated()  # its parked polls go to it now
        return grain_actor.PipelineActor(
            key=grain_key,
            may_deactivate=self._may_deactivate,
            context=context,
            store=self._store,
            configs=self._directory,
            owner=self._address,
            timing=self._timing,
            snapshots=self._snapshots,
            observe_flush=self._grain_metrics.observe,
            observe_dispatch=self._grain_metrics.dispatch.observe,
            events=self._events,
        )

    def _may_deactivate(self, key: GrainKey) -> bool:
        """An idle grain may go once its pipeline's workers are at their minimum (else
        the built-in scaler, which scales what grains publish, would leave them up)."""
        return self._scaler is None or self._scaler.at_rest(key.pipeline_id)

    # -- life cycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        admin = KafkaTopicAdmin(bootstrap=self._bootstrap)
        await admin.ensure_placement_topic()
        await admin.ensure_shared_topic()
        await self._ensure_events_topic(admin)
        self._events.start()
        # Every hosted grain reads its topic through this one consumer.
        self._reader = SharedKafkaReader(bootstrap=self._bootstrap, group_id=GRAINS_GROUP)
        await self._reader.start()
        self._server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerServicer_to_server(
            WorkerService(
                directory=self, address=self._address, limits=Limits(), tracing=self._tracing
            ),
            self._server,
        )
        bind = f"{self._settings.grpc_host}:{self._settings.grpc_port}"
        self.grpc_port = self._server.add_insecure_port(bind)
        await self._server.start()
        follower = PlacementFollower(
            replica=self,
            bootstrap=self._bootstrap,
            group=self._settings.placement_group,
            member=self._settings.effective_replica_name(),
            rescan_s=self._rescan_s,
        )
        self._placement = asyncio.create_task(follower.run(), name="placement")
        self._resync = asyncio.create_task(
            every(self._schedule_resync_s, self.resync_schedules), name="resync"
        )
        if needs_purge(self._engine):
            self._purge = asyncio.create_task(purge_forever(self._engine), name="purge")
        await self._start_http()
        if self._scaler is not None:
            self._scaler.start()
        log.info(
            "scheduler %s serving workers on %s",
            self._settings.effective_replica_name(),
            self._address,
        )

    async def _ensure_events_topic(self, admin: KafkaTopicAdmin) -> None:
        """Live results are an addition, not a duty: a broker that refuses the topic (or
        its retention setting) must not stop the replica from scheduling."""
        try:
            await admin.ensure_events_topic()
        except TopicError as err:
            log.warning(
                "live results: %s; waiters will answer at the end of their wait instead", err
            )

    async def _start_http(self) -> None:
        if not self._settings.metrics_port:
            return
        config = uvicorn.Config(
            http_app(self.registry, lambda: self._joined),
            host=self._settings.metrics_host,
            port=self._settings.metrics_port,
            log_level="warning",
            lifespan="off",
        )
        self._http = uvicorn.Server(config)
        self._http_task = asyncio.create_task(self._http.serve(), name="metrics http")

    async def stop(self) -> None:
        if self._scaler is not None:
            await self._scaler.stop()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        for task in (self._purge, self._resync):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._placement is not None:
            self._placement.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._placement
        await self.release_shards(set(self._shards))
        await self._system.stop()
        if self._reader is not None:
            await self._reader.stop()
        # After the grains' last flushes, whose events are still queued.
        await self._events.stop()
        if self._server is not None:
            await self._server.stop(grace=5)
        self._engine.dispose()
        # In a thread: the last export is a blocking call that may take its timeout.
        await asyncio.to_thread(self._tracing.shutdown)

    # -- schedules ----------------------------------------------------------------------

    async def resync_schedules(self) -> int:
        """Tell each hosted grain whose schedules differ from the store's
        (``schedule_sync.py``); returns how many were told."""
        hosted = list(self._hosted)
        if not hosted:
            return 0
        stored = await self._directory.schedule_versions(hosted)
        told = 0
        for pipeline_id, versions in differing(hosted, stored, self._snapshots).items():
            hosted_grain = self._hosted.get(pipeline_id)
            if hosted_grain is not None:
                message = grain_actor.SyncSchedules(stored=dict(versions))
                self._system.tell(hosted_grain.grain, message)
                told += 1
        return told

    # -- placement (``following.py`` drives these) --------------------------------------

    def owns(self, shard: int) -> bool:
        return shard in self._shards

    def changed(self, pipeline_id: str) -> None:
        if self._scaler is not None:
            self._scaler.invalidate(pipeline_id)

    async def drop(self, pipeline_id: str) -> None:
        await self._drop(pipeline_id)

    async def take_shards(self, shards: set[int]) -> None:
        self._shards = set(shards)
        self._joined = True
        log.info("placement: this replica owns %d shard(s)", len(shards))
        await self.reconcile()

    async def release_shards(self, shards: set[int]) -> None:
        for shard in shards:
            await self._shard_forwarders.stop(shard)
        for pipeline_id in list(self._hosted):
            if shard_of(pipeline_id) in shards:
                await self._drop(pipeline_id)
        self._shards -= shards

    async def reconcile(self) -> None:
        """Host exactly the ready pipelines of the owned shards."""
        async with self._changes:
            try:
                wanted = await self._directory.ready_pipelines(self._shards)
            except sa.exc.SQLAlchemyError as err:
                log.warning("placement: cannot read pipelines now: %s", err)
                return
            for pipeline_id in set(self._hosted) - set(wanted):
                await self._drop_locked(pipeline_id)
            new = {pid: hosting for pid, hosting in wanted.items() if pid not in self._hosted}
            # A shared pipeline's grain is activated only if it has work now (its next
            # record activates it otherwise): taking a shard of 10,000 idle pipelines
            # claims and loads none of them. Not with the built-in scaler, which scales
            # what grains publish: each grain is activated so that its workers are brought
            # to their minimum, and then deactivates when idle.
            lazy = self._scaler is None
            shared = [pid for pid, hosting in new.items() if hosting.shared and lazy]
            try:
                busy = await self._directory.with_work(shared) if shared else set()
            except sa.exc.SQLAlchemyError as err:
                log.warning("placement: cannot read which pipelines have work: %s", err)
                return
            for pipeline_id, hosting in new.items():
                activate = not (hosting.shared and lazy) or pipeline_id in busy
                await self._ensure(pipeline_id, hosting, activate=activate)
            # After the shards' grains, so that their records find them hosted.
            for shard in self._shards - self._shard_forwarders.running():
                self._shard_forwarders.start(shard)

    async def _ensure(self, pipeline_id: str, hosting: Hosting, *, activate: bool = True) -> None:
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
        hosted = _Hosted(
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
            consumer=self._started_reader().view(pipeline_topic(pipeline_id)),
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

    def _started_reader(self) -> SharedKafkaReader:
        if self._reader is None:
            raise RuntimeError("partitions are read once the replica has started")
        return self._reader

    # -- the shared topic (``shard_forwarder.py``) --------------------------------------

    async def _route(self, pipeline_id: str) -> Admit | None:
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
                await self._ensure(pipeline_id, hosting)
        hosted = self._hosted.get(pipeline_id)
        if hosted is None:
            raise RuntimeError(f"pipeline {pipeline_id}: grain not activated yet")
        return hosted.admit

    async def _keep(self, records: Sequence[Quarantined]) -> None:
        await self._quarantine.keep(records, now=_utcnow())

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

    async def _drop(self, pipeline_id: str) -> None:
        async with self._changes:
            await self._drop_locked(pipeline_id)

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

    # -- the worker API's directory -----------------------------------------------------

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        return await self._directory.authenticate(pipeline_id, token)

    async def local(self, pipeline_id: str) -> LocalGrain | None:
        hosted = self._hosted.get(pipeline_id)
        if hosted is None:
            return None
        return hosted.handle

    async def owner_address(self, pipeline_id: str) -> str | None:
        return await self._directory.owner_address(pipeline_id)

    @property
    def metrics_port(self) -> int:
        return self._settings.metrics_port

    def hosted_pipelines(self) -> list[str]:
        return sorted(self._hosted)

    def grain_active(self, pipeline_id: str) -> bool:
        """Whether the pipeline's grain is active now (a hosted pipeline's grain
        deactivates when idle; its pipeline stays hosted)."""
        return self._system.is_active(grain_actor.grain_id(GrainKey(pipeline_id=pipeline_id)))

    # -- what the metrics collector reads ------------------------------------------------

    def snapshots(self) -> dict[GrainKey, GrainSnapshot]:
        return dict(self._snapshots)

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

    def shard_forwarders(self) -> dict[int, ShardForwarder]:
        return self._shard_forwarders.forwarders()

    def shard_stats(self) -> dict[int, ShardStats]:
        return {shard: f.stats for shard, f in self._shard_forwarders.forwarders().items()}

    def queue_labels(self) -> dict[str, tuple[str, str]]:
        return {pid: h.queue_labels for pid, h in self._hosted.items() if h.queue_labels}

    def actor_stats(self) -> dict[str, KindStats]:
        return self._system.stats()
