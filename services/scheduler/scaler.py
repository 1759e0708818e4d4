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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from actors.clock import Clock, MonotonicClock
from actors.pipeline.model import GrainKey, GrainSnapshot
from services.deploy import kube
from services.deploy.charts import merge_values
from services.deploy.scaling import (
    KNOWN_KEYS,
    ScalingPolicy,
    desired_replicas,
    next_idle_since,
)
from services.settings import Settings
from services.store.schema import grain_owners, pipelines

log = logging.getLogger("wsched.scheduler.scaler")

#: The label pipeline-lib puts on a pipeline's objects (the value is the pipeline id).
PIPELINE_LABEL = "wsched.io/pipeline-id"
_READY = "ready"


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
        backlog = snapshot.backlog + (seen.backlog if seen else 0)
        leased = snapshot.leased + (seen.leased if seen else 0)
        owned = (*(seen.grains if seen else ()), (str(key), snapshot.epoch))
        out[pipeline_id] = Workload(
            namespace=names[1], backlog=backlog, leased=leased, grains=owned
        )
    return out


# -- adapters ----------------------------------------------------------------------------


class KubeScale:
    """:class:`KubePort` over the kubernetes client, whose blocking calls run in threads.

    The client is built on first use (``kubeconfig`` and ``context``, else the pod's
    service account, else the default kubeconfig), so a scheduler starts whether or not
    Kubernetes can be reached; until it can, every call raises and the scaler logs it.
    """

    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        context: str | None = None,
        api: k8s.ApiClient | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._api = api
        self._own_api = api is None
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def _apps(self) -> Any:
        with self._lock:
            if self._api is None:
                try:
                    self._api = kube.api_client(self._kubeconfig, self._context)
                except (ConfigException, OSError) as err:
                    where = self._kubeconfig or "the default kubeconfig"
                    context = f", context {self._context}" if self._context else ""
                    raise kube.KubeUnavailable(
                        f"cannot load the kubeconfig {where} (WSCHED_KUBECONFIG{context}): {err}"
                    ) from err
            return k8s.AppsV1Api(self._api)

    async def read_replicas(self, namespace: str, pipeline_id: str) -> list[tuple[str, int]]:
        return await asyncio.to_thread(self._read, namespace, pipeline_id)

    async def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        await asyncio.to_thread(self._set, namespace, name, replicas)

    def _read(self, namespace: str, pipeline_id: str) -> list[tuple[str, int]]:
        with _api_errors(f"list deployments in namespace {namespace}"):
            listed = self._apps().list_namespaced_deployment(
                namespace,
                label_selector=f"{PIPELINE_LABEL}={pipeline_id}",
                _request_timeout=self._timeout_s,
            )
        # The API server defaults an unset spec.replicas to 1.
        return sorted(
            (item.metadata.name, 1 if item.spec.replicas is None else int(item.spec.replicas))
            for item in listed.items
        )

    def _set(self, namespace: str, name: str, replicas: int) -> None:
        with _api_errors(f"patch deployments/scale {namespace}/{name}"):
            self._apps().patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                # The client would pick JSON Patch, which wants a list of operations.
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout_s,
            )

    def close(self) -> None:
        with self._lock:
            if self._own_api and self._api is not None:
                self._api.close()  # type: ignore[no-untyped-call]
                self._api = None


class KubeCallFailed(Exception):
    """The API server refused a call; the message is one line, with what to do."""


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """The client's ApiException, whose text is the whole response, as one line."""
    try:
        yield
    except ApiException as err:
        message = ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            message = json.loads(err.body or "{}").get("message", "")
        hint = ""
        if err.status in (401, 403):
            hint = (
                " (the scheduler's service account needs get/list on deployments and "
                "patch on deployments/scale in the tenants' namespaces)"
            )
        raise KubeCallFailed(
            f"{what}: HTTP {err.status} {err.reason}{': ' + message if message else ''}{hint}"
        ) from err


class SqlOwnerCheck:
    """:class:`OwnerCheck` on ``grain_owners``, the table every grain write is fenced by."""

    def __init__(self, *, engine: sa.Engine) -> None:
        self._engine = engine

    async def still_owned(self, grains: tuple[tuple[str, int], ...]) -> bool:
        return await asyncio.to_thread(self._read, grains)

    def _read(self, grains: tuple[tuple[str, int], ...]) -> bool:
        if not grains:
            return False
        current = sa.or_(
            *(
                sa.and_(grain_owners.c.grain_id == grain_id, grain_owners.c.epoch == epoch)
                for grain_id, epoch in grains
            )
        )
        query = sa.select(sa.func.count()).select_from(grain_owners).where(current)
        with self._engine.connect() as conn:
            return conn.execute(query).scalar_one() == len(grains)


class SqlScalingSource:
    """A pipeline's scaling as its chart gets it: ``values.scaling`` (its known keys: the
    rest is the chart's business), then ``scaling``, merged as Helm merges values.

    The chart's own ``values.yaml`` is not read (it may be anywhere): its defaults count
    only where pipeline-lib's are the same.
    """

    def __init__(self, *, engine: sa.Engine) -> None:
        self._engine = engine

    async def scaling(self, pipeline_id: str) -> Mapping[str, Any] | None:
        return await asyncio.to_thread(self._read, pipeline_id)

    def _read(self, pipeline_id: str) -> Mapping[str, Any] | None:
        query = sa.select(pipelines.c.values_json, pipelines.c.scaling_json).where(
            pipelines.c.id == pipeline_id, pipelines.c.state == _READY
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        values = json.loads(row.values_json or "{}")
        from_values = values.get("scaling") if isinstance(values, dict) else None
        base = (
            {k: v for k, v in from_values.items() if k in KNOWN_KEYS}
            if isinstance(from_values, dict)
            else {}
        )
        scaling = json.loads(row.scaling_json or "{}")
        if not isinstance(scaling, dict):
            raise ValueError(f"the stored scaling is not an object: {row.scaling_json!r}")
        return merge_values(base, scaling)


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
