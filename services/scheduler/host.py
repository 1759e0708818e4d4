"""A scheduler replica: owns shards of the placement space, hosts their pipelines' grains.

Placement (``following.py``): one consumer group over the placement topic, one partition
per shard. The owner of a shard hosts the shard's ready pipelines (``hosting.py``): their
grains, their forwarders and its partition of the shared topic, and serves their workers
over gRPC. Revoking a shard stops its forwarders and deactivates its grains (which flush);
the new owner claims them with a higher epoch, which fences any write the old one still
tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import grpc
import uvicorn
from prometheus_client import CollectorRegistry

from actors.pipeline import actor as grain_actor
from actors.pipeline.model import GrainKey, GrainSnapshot
from actors.runtime import ActorContext, ActorSystem, KindConfig, KindStats
from protos.wsched.v1 import worker_pb2_grpc
from services.kafka.admin import KafkaTopicAdmin, TopicError
from services.kafka.event_publisher import KafkaEventPublisher
from services.kafka.revocations import KafkaRevocationReader, RotationFeed
from services.kafka.shared import ReaderOfItsOwn, SharedKafkaReader
from services.observability import setup_tracing
from services.placement import SHARED_TOPIC, shard_of_grain
from services.scheduler.directory import PipelineDirectory
from services.scheduler.following import PlacementFollower
from services.scheduler.forwarder import ForwarderStats
from services.scheduler.hosting import PipelineHosting
from services.scheduler.metrics import GrainMetrics, ScalerCollector, SchedulerCollector, http_app
from services.scheduler.scaler import KubePort, build_scaler, hosted_workloads
from services.scheduler.schedule_sync import differing, every
from services.scheduler.shard_forwarder import ShardForwarder, ShardStats
from services.scheduler.waking import Waking, WakingStats
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
            wake_margin_s=settings.grain_wake_margin_s,
        )
        self._schedule_resync_s = schedule_resync_s
        self._rescan_s = rescan_s
        self._engine = make_engine(settings.effective_database_url())
        self._store = SqlTaskStore(engine=self._engine, clock=_utcnow)
        self._quarantine = SqlQuarantine(engine=self._engine)
        self._shard_offsets = SqlShardOffsets(engine=self._engine, clock=_utcnow)
        self._directory = PipelineDirectory(
            engine=self._engine,
            window_tasks=settings.window_tasks,
            write_delay_s=settings.write_delay_ms / 1000,
        )
        #: Worker token rotations (``wsched.revocations``): the directory reads a rotated
        #: pipeline's digests again at once; without Kafka, when its cache expires.
        self._rotations: RotationFeed = KafkaRevocationReader(
            bootstrap=self._bootstrap,
            admin=KafkaTopicAdmin(
                bootstrap=self._bootstrap, replication_factor=settings.kafka_replication_factor
            ),
            client_id="wsched-scheduler-revocations",
        )
        self._rotations_task: asyncio.Task[None] | None = None
        self._system = ActorSystem()
        self._activations = asyncio.Semaphore(settings.grain_activations)
        self._system.register(
            grain_actor.KIND, self._make_grain, config=KindConfig(idle_timeout_s=None)
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
        self._hosting = PipelineHosting(
            system=self._system,
            directory=self._directory,
            reader=self._started_reader,
            shard_forwarder=self._shard_forwarder,
            keep=self._keep,
            tracing=self._tracing,
            # The built-in scaler scales what grains publish: with it, each grain is
            # activated at a takeover, so that its workers are brought to their minimum.
            lazy=self._scaler is None,
        )
        self._joined = False
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._shards: set[int] = set()
        self._placement: asyncio.Task[None] | None = None
        self._purge: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._waking = Waking(
            engine=self._engine,
            shards=lambda: self._shards,
            wake=self._wake,
            ready=self._is_ready,
            clock=_utcnow,
        )
        self._waking_task: asyncio.Task[None] | None = None
        self._server: grpc.aio.Server | None = None
        self._reader: SharedKafkaReader | None = None
        self.grpc_port = 0

    def _make_grain(self, key: str, context: ActorContext) -> grain_actor.PipelineActor:
        grain_key = GrainKey.parse(key)
        hosted = self._hosting.get(grain_key.pipeline_id)
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
            activations=self._activations,
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
        self._waking_task = asyncio.create_task(self._waking.run(), name="wake-ups")
        self._rotations_task = asyncio.create_task(
            self._rotations.follow_rotations(self._directory.forget_token), name="token rotations"
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
        for task in (self._purge, self._resync, self._waking_task, self._rotations_task):
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
        hosted = self._hosting.pipelines()
        if not hosted:
            return 0
        stored = await self._directory.schedule_versions(hosted)
        inactive = [p for p in stored if GrainKey(pipeline_id=p) not in self._snapshots]
        resting = await self._directory.resting(inactive) if inactive else set()
        told = 0
        for pipeline_id, versions in differing(hosted, stored, self._snapshots, resting).items():
            hosted_grain = self._hosting.get(pipeline_id)
            if hosted_grain is not None:
                message = grain_actor.SyncSchedules(stored=dict(versions))
                self._system.tell(hosted_grain.grain, message)
                told += 1
        return told

    # -- the wake-up index (``waking.py``) -----------------------------------------------

    async def _wake(self, key: GrainKey) -> bool | None:
        """Activate a resting grain of an owned shard; False if its pipeline is not hosted
        here, None if its shard is no longer owned (its new owner wakes it)."""
        if not self.owns(shard_of_grain(key)):
            return None
        hosted = self._hosting.get(key.pipeline_id)
        if hosted is None:
            return False
        grain_actor.unwrap(await self._system.ask(hosted.grain, grain_actor.Activate()))
        return True

    async def _is_ready(self, pipeline_id: str) -> bool:
        return await self._directory.ready_pipeline(pipeline_id) is not None

    @property
    def waking(self) -> WakingStats:
        return self._waking.stats

    # -- placement (``following.py`` drives these) --------------------------------------

    def owns(self, shard: int) -> bool:
        return shard in self._shards

    def changed(self, pipeline_id: str) -> None:
        if self._scaler is not None:
            self._scaler.invalidate(pipeline_id)

    async def drop(self, pipeline_id: str) -> None:
        await self._hosting.drop(pipeline_id)

    async def take_shards(self, shards: set[int]) -> None:
        """Note the shards; the follower reconciles right after the rebalance."""
        self._shards = set(shards)
        self._joined = True
        log.info("placement: this replica owns %d shard(s)", len(shards))

    async def release_shards(self, shards: set[int]) -> None:
        await self._hosting.release(shards)
        self._shards -= shards

    async def reconcile(self) -> None:
        """Host exactly the ready pipelines of the owned shards (``hosting.py``)."""
        await self._hosting.reconcile(self._shards)

    def _started_reader(self) -> SharedKafkaReader:
        if self._reader is None:
            raise RuntimeError("partitions are read once the replica has started")
        return self._reader

    def _shard_forwarder(self, shard: int) -> ShardForwarder:
        return ShardForwarder(
            shard=shard,
            consumer=self._started_reader().view(SHARED_TOPIC),
            catch_up=lambda: ReaderOfItsOwn(bootstrap=self._bootstrap, topic=SHARED_TOPIC),
            offsets=self._shard_offsets,
            owner=self._address,
            route=self._hosting.route,
            keep=self._keep,
        )

    async def _keep(self, records: Sequence[Quarantined]) -> None:
        await self._quarantine.keep(records, now=_utcnow())

    # -- the worker API's directory -----------------------------------------------------

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        return await self._directory.authenticate(pipeline_id, token)

    async def local(self, pipeline_id: str) -> LocalGrain | None:
        hosted = self._hosting.get(pipeline_id)
        if hosted is None:
            return None
        return hosted.handle

    async def owner_address(self, pipeline_id: str) -> str | None:
        return await self._directory.owner_address(pipeline_id)

    @property
    def metrics_port(self) -> int:
        return self._settings.metrics_port

    def hosted_pipelines(self) -> list[str]:
        return sorted(self._hosting.pipelines())

    def grain_active(self, pipeline_id: str) -> bool:
        """Whether the pipeline's grain is active now (a hosted pipeline's grain
        deactivates when idle; its pipeline stays hosted)."""
        return self._system.is_active(grain_actor.grain_id(GrainKey(pipeline_id=pipeline_id)))

    # -- what the metrics collector reads ------------------------------------------------

    def snapshots(self) -> dict[GrainKey, GrainSnapshot]:
        return dict(self._snapshots)

    def forwarders(self) -> dict[str, ForwarderStats]:
        return self._hosting.forwarders()

    def shard_forwarders(self) -> dict[int, ShardForwarder]:
        return self._hosting.shard_forwarders()

    def shard_stats(self) -> dict[int, ShardStats]:
        return {shard: f.stats for shard, f in self._hosting.shard_forwarders().items()}

    def queue_labels(self) -> dict[str, tuple[str, str]]:
        return self._hosting.queue_labels()

    def actor_stats(self) -> dict[str, KindStats]:
        return self._system.stats()
