"""Brings pipelines to the state their row asks for: provisioning -> ready | failed, a
pending redeploy, and deleting -> gone; and carries on tenant deletions
(:mod:`services.api.tenant_deletion`).

Runs in the API process. Every step is idempotent and every state change is a
compare-and-set on the row, so a crash at any point is repaired by the next pass (one
at start-up, then every ``reconcile_interval_s``), and two API replicas reconciling the
same pipeline do no harm.

At start, and every ``drift_check_s`` after, it asks the deployer whether each ready
pipeline's workers are still in place (``Deployer.in_place``) and deploys again those that
are not: the local deployer's processes are gone after a restart of this process, a Helm
release may have been deleted or changed behind our back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from protos.wsched.v1 import events_pb2
from services.api.context import DatabaseUnavailable, in_thread
from services.api.limits import Limits
from services.api.metrics import ApiMetrics
from services.api.tenant_deletion import TenantDeleter, guarded, pending_ids
from services.deploy.ports import Deployer, DeployFailed, DeploymentStatus
from services.kafka.admin import TopicAdmin
from services.kafka.producer import BrokerUnavailable, EventProducer
from services.store.control import DEPLOYMENT_PENDING, ControlStore, Pipeline, PipelineState

log = logging.getLogger("wsched.api.reconciler")

Kind = events_pb2.PlacementEvent.Kind
#: Pipelines reconciled at once: a slow chart install must not hold up the others.
_CONCURRENCY = 8


class Reconciler:
    def __init__(
        self,
        *,
        store: ControlStore,
        admin: TopicAdmin,
        deployer: Deployer,
        producer: EventProducer,
        limits: Limits,
        metrics: ApiMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` is monotonic seconds: when drift checks are due, how long a deploy
        took (a test moves it instead of sleeping)."""
        self._store = store
        self._admin = admin
        self._deployer = deployer
        self._producer = producer
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        self._placement_topic_ready = False
        self._shared_topic_ready = False
        #: When the next drift check is due (on ``clock``): at once, at start.
        self._drift_due = 0.0 if deployer.kind else float("inf")
        self._drift_lock = asyncio.Lock()
        self._restarts: set[str] = set()
        #: Tenant deletions, whose pipelines go through :meth:`reconcile` like any other.
        self.tenants = TenantDeleter(store=store, deployer=deployer, reconcile=self.reconcile)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Reconciler]:
        loop = asyncio.create_task(self._scan_forever(), name="wsched-reconciler")
        try:
            yield self
        finally:
            loop.cancel()
            tasks = [loop, *self._running.values(), *self.tenants.cancel()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def nudge(self, pipeline_id: str) -> None:
        """Reconcile this pipeline soon (again, if a pass is under way)."""
        if pipeline_id in self._running:
            self._again.add(pipeline_id)
            return
        task = asyncio.create_task(self._reconcile_repeatedly(pipeline_id))
        self._running[pipeline_id] = task

    async def idle(self) -> None:
        """Wait until no pipeline is being reconciled and no drift check is under way
        (for tests and orderly shutdown)."""
        while self._running or self._drift_lock.locked():
            async with self._drift_lock:  # a check under way nudges what it finds
                pass
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
        await self.tenants.idle()

    async def _scan_forever(self) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(self._limits.reconcile_interval_s)

    async def scan(self) -> None:
        if not self._placement_topic_ready:
            await self._ensure_placement_topic()
        if not self._shared_topic_ready:
            await self._ensure_shared_topic_logged()
        pending = await pending_ids(
            self._store.pending_reconcile, lambda pipeline: pipeline.id, what="pipelines"
        )
        for pipeline_id in pending:
            self.nudge(pipeline_id)
        await self.tenants.scan()
        if self._clock() >= self._drift_due:
            await self._check_drift()

    async def _check_drift(self) -> None:
        """Deploy again the ready pipelines whose workers are no longer in place."""
        if self._drift_lock.locked():
            return  # one check at a time: the periodic pass and an explicit scan
        async with self._drift_lock:
            self._drift_due = self._clock() + self._limits.drift_check_s
            kind = self._deployer.kind
            try:
                deployed = await in_thread(self._store.deployed_by, kind)
            except DatabaseUnavailable as err:
                log.warning("reconciler: cannot list %s deployments, retrying: %s", kind, err)
                self._drift_due = 0.0
                return
            checks = [self._in_place(pipeline) for pipeline in deployed]
            for pipeline, in_place in zip(deployed, await asyncio.gather(*checks), strict=True):
                if in_place is False:
                    self._restarts.add(pipeline.id)
                    self.nudge(pipeline.id)
                elif in_place is None:  # could not tell: look again at the next pass
                    self._drift_due = 0.0

    async def _in_place(self, pipeline: Pipeline) -> bool | None:
        async with self._slots:
            try:
                return await self._deployer.in_place(pipeline)
            except Exception as err:  # noqa: BLE001 - helm's or the cluster's; next pass
                log.warning(
                    "reconciler: cannot tell whether pipeline %s is in place: %s",
                    pipeline.id,
                    _reason(err),
                )
                return None

    async def _ensure_placement_topic(self) -> None:
        try:
            await self._admin.ensure_placement_topic()
        except Exception as err:  # noqa: BLE001 - the broker's many errors; retried next pass
            log.warning("reconciler: placement topic not ensured, retrying next pass: %s", err)
            return
        self._placement_topic_ready = True

    async def _ensure_shared_topic_logged(self) -> None:
        try:
            await self._ensure_shared_topic()
        except Exception as err:  # noqa: BLE001 - the broker's many errors; retried next pass
            log.warning("reconciler: shared topic not ensured, retrying next pass: %s", err)

    async def _ensure_shared_topic(self) -> None:
        """Ensured at start, so that scheduler replicas find it; and again before a shared
        pipeline is made ready if that failed (raises then: it is not ready without it)."""
        if not self._shared_topic_ready:
            await self._admin.ensure_shared_topic()
            self._shared_topic_ready = True

    async def _reconcile_repeatedly(self, pipeline_id: str) -> None:
        try:
            while True:
                self._again.discard(pipeline_id)
                async with self._slots:
                    await self._reconcile_logged(pipeline_id)
                if pipeline_id not in self._again:
                    return
        finally:
            self._running.pop(pipeline_id, None)

    async def _reconcile_logged(self, pipeline_id: str) -> None:
        await guarded(self.reconcile(pipeline_id), f"reconciler: pipeline {pipeline_id}")

    async def reconcile(self, pipeline_id: str) -> None:
        pipeline = await in_thread(self._store.pipeline_by_id, pipeline_id)
        if pipeline is None:
            return
        if pipeline.state is PipelineState.PROVISIONING:
            await self._provision(pipeline)
        elif pipeline.state is PipelineState.DELETING:
            await self._delete(pipeline)
        elif pipeline.state is PipelineState.READY:
            restart = pipeline.id in self._restarts
            self._restarts.discard(pipeline.id)
            if pipeline.deployment.get("status") == DEPLOYMENT_PENDING:
                await self._redeploy(pipeline)
            elif restart:
                await self._restart(pipeline)

    # -- provisioning ------------------------------------------------------------------------

    async def _provision(self, pipeline: Pipeline) -> None:
        try:
            status = await self._retrying(
                f"provisioning pipeline {pipeline.id}", self._deploy_steps(pipeline)
            )
        except Exception as err:  # noqa: BLE001 - shown as the reason; a PATCH retries
            reason = _reason(err)
            log.warning("pipeline %s failed to provision: %s", pipeline.id, reason)
            deployment = DeploymentStatus(
                status="failed", revision=_revision(pipeline), detail=reason
            )
            await in_thread(
                self._store.mark_failed,
                pipeline.id,
                reason=reason,
                deployment=deployment.to_json(),
                seen=pipeline.updated_at,
            )
            self._observed(pipeline, deployment)
            return
        ready = await in_thread(
            self._store.mark_ready,
            pipeline.id,
            deployment=status.to_json(),
            seen=pipeline.updated_at,
        )
        self._observed(pipeline, status)
        if ready:
            log.info("pipeline %s is ready (revision %d)", pipeline.id, status.revision)
            await self._announce(pipeline, Kind.KIND_CREATED)

    def _deploy_steps(self, pipeline: Pipeline) -> Callable[[], Awaitable[DeploymentStatus]]:
        async def steps() -> DeploymentStatus:
            await self._ensure_topic_of(pipeline)
            return await self._timed_deploy(pipeline)

        return steps

    async def _ensure_topic_of(self, pipeline: Pipeline) -> None:
        """A dedicated pipeline's own topic; for a shared one, the topic it shares (its
        records go to its shard's partition there: nothing of its own to create)."""
        if pipeline.route.shared:
            await self._ensure_shared_topic()
        else:
            await self._admin.create_pipeline_topic(pipeline.id, pipeline.partitions)

    def _deploy_only(self, pipeline: Pipeline) -> Callable[[], Awaitable[DeploymentStatus]]:
        async def steps() -> DeploymentStatus:
            return await self._timed_deploy(pipeline)

        return steps

    async def _timed_deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        started = self._clock()
        result = "failed"
        try:
            status = await self._deployer.deploy(pipeline)
            result = "deployed"
            return status
        except DeployFailed:
            raise
        except Exception:
            result = "error"  # transient: helm or the cluster unreachable; retried
            raise
        finally:
            if self._metrics is not None:
                self._metrics.deploys.labels(result).inc()
                self._metrics.deploy_seconds.observe(self._clock() - started)

    def _observed(self, pipeline: Pipeline, status: DeploymentStatus) -> None:
        if self._metrics is not None:
            self._metrics.deployment_recorded(pipeline.id, status.status, status.revision)

    async def _retrying(
        self, what: str, attempt: Callable[[], Awaitable[DeploymentStatus]]
    ) -> DeploymentStatus:
        """Bounded retries with doubling pauses for transient broker trouble; a deployer's
        definite failure is not retried."""
        pause = self._limits.reconcile_backoff_s
        for number in range(1, self._limits.reconcile_attempts + 1):
            try:
                return await attempt()
            except DeployFailed:
                raise
            except Exception as err:
                if number == self._limits.reconcile_attempts:
                    raise
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.1f s",
                    what,
                    number,
                    _reason(err),
                    pause,
                )
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _redeploy(self, pipeline: Pipeline) -> None:
        await self._deploy_ready(pipeline, "redeploy")
        # Settings such as max_attempts changed too: the owning grain reloads them.
        await self._announce(pipeline, Kind.KIND_UPDATED)

    async def _restart(self, pipeline: Pipeline) -> None:
        """Deploy again workers that are no longer in place; nothing else changed, so the
        owning grain is not told."""
        await self._deploy_ready(pipeline, "deploying again")

    async def _deploy_ready(self, pipeline: Pipeline, what: str) -> None:
        """Deploy a ready pipeline; a failure is shown as its deployment's status and
        reason, and the pipeline stays ready (its old workers, if any, keep serving)."""
        reason = ""
        try:
            status = await self._retrying(
                f"pipeline {pipeline.id}: {what}", self._deploy_only(pipeline)
            )
        except Exception as err:  # noqa: BLE001 - shown as the reason; a PATCH retries
            reason = _reason(err)
            log.warning("pipeline %s: %s failed: %s", pipeline.id, what, reason)
            status = _failed(pipeline, reason)
        else:
            log.info("pipeline %s: %s done (revision %d)", pipeline.id, what, status.revision)
        await in_thread(
            self._store.mark_ready,
            pipeline.id,
            deployment=status.to_json(),
            reason=reason,
            seen=pipeline.updated_at,
        )
        self._observed(pipeline, status)

    # -- deleting ----------------------------------------------------------------------------

    async def _delete(self, pipeline: Pipeline) -> None:
        # The grain goes first, so that nothing serves the pipeline while it is torn down.
        await self._announce(pipeline, Kind.KIND_DELETED)
        try:
            await self._deployer.remove(pipeline)
            if not pipeline.route.shared:
                # A shared pipeline has no topic of its own: its records stay in its
                # shard's partition until retention drops them, for the shard's reader
                # to skip (no such pipeline any more).
                await self._admin.delete_pipeline_topic(pipeline.id)
            deleted = await in_thread(self._store.purge_pipeline, pipeline.id)
            if self._metrics is not None:
                self._metrics.deployment_forgotten(pipeline.id)
        except DatabaseUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - stays deleting; the next pass retries
            reason = _reason(err)
            log.warning(
                "pipeline %s: delete incomplete, retrying next pass: %s", pipeline.id, reason
            )
            await in_thread(self._store.note_deleting_problem, pipeline.id, reason=reason)
            return
        log.info("pipeline %s deleted with %d tasks", pipeline.id, deleted)

    async def _announce(
        self, pipeline: Pipeline, kind: events_pb2.PlacementEvent.Kind.ValueType
    ) -> None:
        """Tell the shard's owner at once; if the broker is away, its periodic scan of the
        pipeline table catches up, so a failure here is only logged."""
        if not self._placement_topic_ready:
            await self._ensure_placement_topic()
        try:
            await self._producer.placement(pipeline.id, pipeline.shard, kind)
        except BrokerUnavailable as err:
            log.warning(
                "pipeline %s: placement event %s not produced: %s",
                pipeline.id,
                Kind.Name(kind),
                err,
            )


def _revision(pipeline: Pipeline) -> int:
    value = pipeline.deployment.get("revision", 0)
    return value if isinstance(value, int) else 0


def _failed(pipeline: Pipeline, reason: str) -> DeploymentStatus:
    """A ready pipeline's failed redeploy; it keeps its deployer, so that the next start
    of this process tries its lost workers again."""
    deployer = pipeline.deployment.get("deployer", "")
    return DeploymentStatus(
        status="failed",
        revision=_revision(pipeline),
        detail=reason,
        deployer=deployer if isinstance(deployer, str) else "",
    )


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text[:2000]
