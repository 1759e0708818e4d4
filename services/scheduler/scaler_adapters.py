"""The built-in scaler's adapters: the Kubernetes scale API, and the SQL reads of grain
ownership and of a pipeline's scaling.

They implement the ports of :mod:`services.scheduler.scaler` (``KubePort``,
``OwnerCheck``, ``PolicySource``), so that the scaler's rule is tested with in-memory
twins and these against a real kube-apiserver and database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from services.deploy import kube
from services.deploy.charts import merge_values
from services.deploy.scaling import KNOWN_KEYS
from services.store.schema import grain_owners, pipelines

#: The label pipeline-lib puts on a pipeline's objects (the value is the pipeline id).
PIPELINE_LABEL = "wsched.io/pipeline-id"
_READY = "ready"


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
