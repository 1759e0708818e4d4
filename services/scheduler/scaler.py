"""The built-in scaler: the replica owning a pipeline's grain sets its workers' replicas.

For clusters without KEDA (``WSCHED_AUTOSCALER=builtin``). Every ``scaler_interval_s``
the scaler goes over the pipelines this replica hosts and sets the replicas of each one's
Deployment (labelled ``wsched.io/pipeline-id``, in the tenant's namespace) through the
scale subresource, from the grain's backlog and leases and the pipeline's ``scaling``
(services/deploy/scaling.py). Owning the grain is owning the scaling: a replica scales
only what it hosts, so when a grain moves the old owner stops and the new one takes over.

What it remembers per pipeline (the last change, since when the pipeline is idle, the
Deployment's replicas as last seen) lives in memory and goes with the grain. A new owner
counts its takeover as a change, so it scales down no sooner than ``cooldown_s`` after it
(to zero no sooner than ``idle_s``) and never flaps what the previous owner just did;
scale-ups are immediate. Kubernetes is read when the scaler has no figure for a
Deployment, after any error, and every ``resync_s`` (someone may have scaled it by hand);
between reads a steady pipeline costs no API call.

The scaler talks to ports (``KubePort``, ``OwnerCheck``, ``PolicySource``); their real
adapters are in services/scheduler/scaler_adapters.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from actors.clock import Clock, MonotonicClock
from actors.pipeline.model import GrainKey, GrainSnapshot
from services.deploy.scaling import (
    ScalingPolicy,
    desired_replicas,
    next_idle_since,
)
from services.scheduler.scaler_adapters import (
    PIPELINE_LABEL,
    KubeScale,
    SqlOwnerCheck,
    SqlScalingSource,
)
from services.settings import Settings

log = logging.getLogger("wsched.scheduler.scaler")


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A hosted pipeline as the scaler sees it."""

    namespace: str
    backlog: int
    leased: int
    #: (grain id, epoch) of each of its grains here: a change is made only while every
    #: epoch is still current, so a paused ex-owner that wakes up changes nothing.
    grains: tuple[tuple[str, int], ...] = ()


class KubePort(Protocol):
    """The few Kubernetes calls the scaler makes."""

    async def read_replicas(self, namespace: str, pipeline_id: str) -> list[tuple[str, int]]:
        """(name, spec.replicas) of the pipeline's Deployments; empty if there is none."""
        ...

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> None: ...

    def close(self) -> None: ...


class OwnerCheck(Protocol):
    async def still_owned(self, grains: tuple[tuple[str, int], ...]) -> bool:
        """Whether every ``(grain id, epoch)`` is still the grain's current epoch."""
        ...


class PolicySource(Protocol):
    async def scaling(self, pipeline_id: str) -> Mapping[str, Any] | None:
        """The pipeline's ``scaling`` mapping; ``None`` if it is not a ready pipeline."""
        ...


def hosted_workloads(
    snapshots: Mapping[GrainKey, GrainSnapshot], labels: Mapping[str, tuple[str, str]]
) -> dict[str, Workload]:
    """The workloads of the hosted pipelines (those with queue labels) whose grain is live,
    from the snapshots the grains publish. Slices of one pipeline add up.
    """
    out: dict[str, Workload] = {}
    for key, snapshot in snapshots.items():
        pipeline_id = key.pipeline_id
        names = labels.get(pipeline_id)
        if names is None:
            continue
        seen = out.get(pipeline_id)
        # Tasks due within the pipeline's lead count already: workers start before them.
        backlog = snapshot.backlog + snapshot.due_soon + (seen.backlog if seen else 0)
        leased = snapshot.leased + (seen.leased if seen else 0)
        owned = (*(seen.grains if seen else ()), (str(key), snapshot.epoch))
        out[pipeline_id] = Workload(
            namespace=names[1], backlog=backlog, leased=leased, grains=owned
        )
    return out


# -- the scaler --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ScalerStats:
    """What the metrics collector reads."""

    #: Replicas wanted, by pipeline (scaled pipelines only).
    desired: Mapping[str, int]
    #: Changes made, by (pipeline, "up" | "down").
    changes: Mapping[tuple[str, str], int]
    errors: int


@dataclass(kw_only=True)
class _State:
    last_change: float
    idle_since: float | None = None
    policy: ScalingPolicy | None = None
    policy_problem: str = ""
    policy_at: float | None = None
    namespace: str = ""
    #: Deployment name -> replicas, as last read or set; None: read it again.
    deployments: dict[str, int] | None = None
    read_at: float = 0.0
    desired: int | None = None
    changes: Counter[str] = field(default_factory=Counter)
    warned_at: float | None = None


class Scaler:
    """Use :meth:`start` and :meth:`stop`, or call :meth:`run_once` (tests)."""

    def __init__(
        self,
        *,
        kube: KubePort,
        workloads: Callable[[], Mapping[str, Workload]],
        policies: PolicySource,
        interval_s: float,
        owners: OwnerCheck | None = None,
        clock: Clock | None = None,
        policy_ttl_s: float = 60.0,
        resync_s: float = 60.0,
        warn_every_s: float = 60.0,
        concurrency: int = 8,
    ) -> None:
        self._kube = kube
        self._workloads = workloads
        self._policies = policies
        self._owners = owners
        self._interval_s = interval_s
        self._clock: Clock = clock or MonotonicClock()
        self._policy_ttl_s = policy_ttl_s
        self._resync_s = resync_s
        self._warn_every_s = warn_every_s
        self._slots = asyncio.Semaphore(concurrency)
        self._states: dict[str, _State] = {}
        self._errors = 0
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scaler")
            log.info("built-in scaler: every %.1f s over the hosted pipelines", self._interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._kube.close)

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await self._clock.sleep(self._interval_s)

    def invalidate(self, pipeline_id: str) -> None:
        """The pipeline changed (perhaps redeployed): read its scaling and its Deployment
        again at the next round."""
        state = self._states.get(pipeline_id)
        if state is not None:
            state.policy_at = None
            state.deployments = None

    def at_rest(self, pipeline_id: str) -> bool:
        """Whether the pipeline's Deployments are at its minimum, or not scaled by this
        scaler at all (KEDA's, no policy, no Deployment): its grain may then deactivate
        without leaving workers up."""
        state = self._states.get(pipeline_id)
        if state is None:
            return False  # not looked at yet: the next pass decides
        policy = state.policy
        if policy is None or policy.keda or not state.deployments:
            return True
        return all(replicas <= policy.min_replicas for replicas in state.deployments.values())

    def stats(self) -> ScalerStats:
        return ScalerStats(
            desired={pid: s.desired for pid, s in self._states.items() if s.desired is not None},
            changes={
                (pid, direction): count
                for pid, state in self._states.items()
                for direction, count in state.changes.items()
            },
            errors=self._errors,
        )

    # -- one round -------------------------------------------------------------------------

    async def run_once(self) -> None:
        """Scale every hosted pipeline once; never raises (but cancellation)."""
        try:
            hosted = dict(self._workloads())
        except Exception:  # the next round tries again
            log.exception("scaler: cannot list the hosted pipelines")
            return
        for gone in set(self._states) - set(hosted):
            del self._states[gone]  # no longer ours: its new owner decides
        await asyncio.gather(*(self._guarded(pid, work) for pid, work in sorted(hosted.items())))

    async def _guarded(self, pipeline_id: str, work: Workload) -> None:
        async with self._slots:
            try:
                await self._step(pipeline_id, work)
            except Exception as err:  # noqa: BLE001 - logged, counted, retried next round
                self._errors += 1
                state = self._states.get(pipeline_id)
                if state is not None:
                    state.deployments = None
                self._warn(pipeline_id, "scaling failed, retrying: %s: %s", type(err).__name__, err)

    async def _step(self, pipeline_id: str, work: Workload) -> None:
        now = self._clock.now()
        state = self._states.get(pipeline_id)
        if state is None:
            state = self._states[pipeline_id] = _State(last_change=now)
        state.idle_since = next_idle_since(
            backlog=work.backlog, leased=work.leased, now=now, idle_since=state.idle_since
        )
        policy = await self._policy(pipeline_id, state, now)
        if policy is None or policy.keda:
            state.desired = None
            return
        deployments = await self._deployments(pipeline_id, state, work.namespace, now)
        if deployments is None:
            state.desired = None
            return
        want = desired_replicas(
            policy,
            backlog=work.backlog,
            leased=work.leased,
            current=max(deployments.values()),
            now=now,
            last_change=state.last_change,
            idle_since=state.idle_since,
        )
        state.desired = want
        await self._apply(pipeline_id, state, work, want, now)

    async def _deployments(
        self, pipeline_id: str, state: _State, namespace: str, now: float
    ) -> dict[str, int] | None:
        """The pipeline's Deployments and their replicas: remembered, or read when unknown,
        moved to another namespace, or not read for ``resync_s``."""
        if state.namespace != namespace or now - state.read_at >= self._resync_s:
            state.deployments = None
        if state.deployments is None:
            found = await self._kube.read_replicas(namespace, pipeline_id)
            state.namespace, state.read_at = namespace, now
            if not found:
                self._warn(
                    pipeline_id,
                    "no Deployment labelled %s=%s in namespace %s yet; not scaled",
                    PIPELINE_LABEL,
                    pipeline_id,
                    namespace,
                )
                return None
            state.deployments = dict(found)
        return state.deployments

    async def _apply(
        self, pipeline_id: str, state: _State, work: Workload, want: int, now: float
    ) -> None:
        deployments = state.deployments or {}
        stale = {name: replicas for name, replicas in deployments.items() if replicas != want}
        if not stale:
            return
        if self._owners is not None and not await self._owners.still_owned(work.grains):
            # Another replica owns the grain now (this one was paused, or is about to
            # hear of the move): the Deployment is the new owner's to scale.
            log.info("pipeline %s: no longer its grain's owner; not scaled", pipeline_id)
            del self._states[pipeline_id]
            return
        direction = "up" if any(replicas < want for replicas in stale.values()) else "down"
        for name, replicas in sorted(stale.items()):
            await self._kube.set_replicas(work.namespace, name, want)
            deployments[name] = want
            log.info(
                "pipeline %s: %s/%s scaled %s from %d to %d (backlog %d, leased %d)",
                pipeline_id,
                work.namespace,
                name,
                direction,
                replicas,
                want,
                work.backlog,
                work.leased,
            )
        state.changes[direction] += 1
        state.last_change = now

    async def _policy(self, pipeline_id: str, state: _State, now: float) -> ScalingPolicy | None:
        if state.policy_at is not None and now - state.policy_at < self._policy_ttl_s:
            return state.policy
        try:
            mapping = await self._policies.scaling(pipeline_id)
        except Exception as err:  # noqa: BLE001 - keep the policy we had
            self._errors += 1
            self._warn(pipeline_id, "cannot read its scaling now: %s: %s", type(err).__name__, err)
            return state.policy
        state.policy_at = now
        if mapping is None:
            state.policy = None  # no longer ready: placement drops it soon
            return None
        try:
            state.policy, state.policy_problem = ScalingPolicy.from_mapping(mapping), ""
        except ValueError as err:
            state.policy = None
            if str(err) != state.policy_problem:
                state.policy_problem = str(err)
                log.warning("pipeline %s: not scaled: %s", pipeline_id, err)
        return state.policy

    def _warn(self, pipeline_id: str, message: str, *args: object) -> None:
        """Log at most once per ``warn_every_s`` per pipeline."""
        state = self._states.get(pipeline_id)
        now = self._clock.now()
        if state is not None:
            if state.warned_at is not None and now - state.warned_at < self._warn_every_s:
                return
            state.warned_at = now
        log.warning("pipeline %s: " + message, pipeline_id, *args)


def build_scaler(
    *,
    settings: Settings,
    engine: sa.Engine,
    workloads: Callable[[], Mapping[str, Workload]],
    kube_port: KubePort | None = None,
) -> Scaler | None:
    """The scaler a scheduler replica runs, or ``None`` unless ``autoscaler`` is builtin."""
    if settings.autoscaler != "builtin":
        return None
    return Scaler(
        kube=kube_port or KubeScale(kubeconfig=settings.kubeconfig, context=settings.kube_context),
        workloads=workloads,
        policies=SqlScalingSource(engine=engine),
        owners=SqlOwnerCheck(engine=engine),
        interval_s=settings.scaler_interval_s,
    )
