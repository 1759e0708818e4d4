"""The Helm deployer: each pipeline's chart is a Helm release in its tenant's namespace.

``WSCHED_DEPLOYER=helm``. A pipeline's ``chart`` is one of

- a local chart directory or ``.tgz`` archive (relative paths are taken from the API's
  working directory). A directory's ``file://`` dependencies are built into a private
  copy, so a chart such as ``charts/examples/echo`` installs as it is in the repository;
- ``oci://registry/path/name`` with ``chart_version`` (or the newest);
- ``https://host/path/name-1.0.0.tgz``, a chart archive;
- ``https://host/path/name``: the chart ``name`` of the chart repository at
  ``https://host/path`` (whose ``index.yaml`` lists it), at ``chart_version``.

The release is named ``<tenant>-<application>-<pipeline>`` (services/deploy/naming.py)
in the namespace ``wsched-<tenant>``, created and labelled when absent. The values are the
chart's, then the operator's image override, then the pipeline's ``values`` and
``scaling``, then what the deployer injects, which always wins: ``pipelineId``,
``scheduler.address``, ``workerToken.value`` (the chart keeps it in a Secret) and
``scaling.autoscaler`` when the scheduler's built-in scaler sets the replicas.

What was deployed is fingerprinted (chart, version, values; the token by digest) into
the release's description, so :meth:`HelmDeployer.in_place` can tell a release that is
missing, failed or stale from one that is current.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pyhelm3 import Client
from pyhelm3 import errors as helm_errors
from pyhelm3.models import ReleaseRevisionStatus

from services.deploy import kube
from services.deploy.charts import local_chart_path, merge_values
from services.deploy.naming import namespace_for, release_name
from services.deploy.ports import DeployFailed, DeploymentStatus
from services.store.control import ControlError, Pipeline

log = logging.getLogger("wsched.deploy.helm")

KIND = "helm"
_DESCRIPTION_PREFIX = "wsched "
#: Helm's message is the pipeline's reason; the API shows at most this much of it.
_MAX_MESSAGE = 2000
#: Helm's refusal while a release is pending (another operation, or a dead helm's).
_IN_PROGRESS = "another operation (install/upgrade/rollback) is in progress"
#: Past the helm timeout, how long a pending release may be another replica's operation.
_PENDING_SLACK_S = 60
_UNINSTALL_WHEN = frozenset(
    {ReleaseRevisionStatus.PENDING_INSTALL, ReleaseRevisionStatus.UNINSTALLING}
)


class HelmUnavailable(Exception):
    """Helm or the Kubernetes API cannot be reached right now: worth another attempt."""


@dataclass(frozen=True, kw_only=True)
class HelmOptions:
    #: The scheduler's gRPC address the workers poll.
    scheduler: str
    #: Relative chart paths are resolved against this directory.
    base_dir: Path
    #: Where local charts with dependencies are prepared (built copies).
    work_dir: Path
    executable: str = "helm"
    kubeconfig: Path | None = None
    kube_context: str | None = None
    #: ``repository:tag`` of the agents' image, replacing each chart's ``image``.
    worker_image: str | None = None
    #: ``builtin``: the scheduler's scaler sets replicas, so charts leave them alone.
    autoscaler: str = "none"
    timeout_s: int = 300


@dataclass(frozen=True, kw_only=True)
class ChartSource:
    """Where helm takes a chart from: ``ref`` (a path, an archive URL, an ``oci://``
    reference or a name in ``repo``) and the version asked for."""

    ref: str
    repo: str | None = None
    version: str | None = None
    #: A local chart directory (not an archive, not a URL).
    directory: bool = False
    #: A local directory's content digest, so that an edited chart counts as a change.
    digest: str = ""


@dataclass(frozen=True, kw_only=True)
class PipelineNames:
    tenant: str
    application: str
    pipeline: str

    @property
    def release(self) -> str:
        return release_name(self.tenant, self.application, self.pipeline)

    @property
    def namespace(self) -> str:
        return namespace_for(self.tenant)


class HelmDeployer:
    """The :class:`~services.deploy.ports.Deployer` of ``WSCHED_DEPLOYER=helm``."""

    kind = KIND

    def __init__(
        self,
        *,
        options: HelmOptions,
        token_of: Callable[[str], str],
        names_of: Callable[[str], PipelineNames | None],
        api: k8s.ApiClient | None = None,
    ) -> None:
        """``token_of`` and ``names_of`` are blocking lookups by pipeline id (the control
        store's); ``api`` defaults to one built from the options."""
        self._options = options
        self._token_of = token_of
        self._names_of = names_of
        self._api = api
        self._client: Client | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._prepared: dict[str, Path] = {}
        self._building: dict[str, asyncio.Lock] = {}

    # -- the port ----------------------------------------------------------------------------

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        async with self._lock(pipeline.id):
            names = await self._names(pipeline)
            await self._ensure_namespace(names)
            source = await self._source(pipeline)
            token = await self._token(pipeline.id)
            values = self._values(pipeline, token)
            fingerprint = _fingerprint(source, values)
            client = self._helm()
            what = f"helm upgrade --install {names.release}"
            try:
                chart = await client.get_chart(source.ref, repo=source.repo, version=source.version)
                install = functools.partial(
                    client.install_or_upgrade_release,
                    names.release,
                    chart,
                    values,
                    namespace=names.namespace,
                    create_namespace=False,
                    description=_DESCRIPTION_PREFIX + fingerprint,
                    timeout=f"{self._options.timeout_s}s",
                    wait=False,
                )
                try:
                    revision = await install()
                except helm_errors.Error as err:
                    if _IN_PROGRESS not in str(err):
                        raise
                    await self._unstick(pipeline, names)
                    revision = await install()
            except helm_errors.Error as err:
                raise _classified(err, what) from err
            log.info(
                "pipeline %s: release %s/%s revision %d (%s)",
                pipeline.id,
                names.namespace,
                names.release,
                revision.revision,
                revision.status.value,
            )
            return DeploymentStatus(
                status="deployed",
                revision=revision.revision,
                detail=(
                    f"Helm release {names.release} in namespace {names.namespace}, chart "
                    f"{chart.metadata.name} {chart.metadata.version}"
                ),
                deployer=KIND,
                release=names.release,
                namespace=names.namespace,
            )

    async def remove(self, pipeline: Pipeline) -> None:
        async with self._lock(pipeline.id):
            release, namespace = await self._recorded_names(pipeline)
            if not release:
                return  # never deployed by us
            try:
                await self._helm().uninstall_release(release, namespace=namespace, wait=False)
            except helm_errors.Error as err:
                raise _classified(err, f"helm uninstall {release}") from err
            log.info("pipeline %s: release %s/%s uninstalled", pipeline.id, namespace, release)

    async def in_place(self, pipeline: Pipeline) -> bool:
        """Whether the pipeline's release exists, deployed, from what would be deployed now."""
        async with self._lock(pipeline.id):
            names = await self._names(pipeline)
            try:
                current = await self._helm().get_current_revision(
                    names.release, namespace=names.namespace
                )
            except helm_errors.ReleaseNotFoundError:
                log.warning(
                    "pipeline %s: release %s/%s is missing",
                    pipeline.id,
                    names.namespace,
                    names.release,
                )
                return False
            except helm_errors.Error as err:
                raise _classified(err, f"helm status {names.release}") from err
            if current.status is not ReleaseRevisionStatus.DEPLOYED:
                log.warning(
                    "pipeline %s: release %s is %s", pipeline.id, names.release, current.status
                )
                return False
            try:
                source = await self._source(pipeline)
                token = await self._token(pipeline.id)
            except DeployFailed as err:
                # Deploying again fails too, but then says why, as the pipeline's reason.
                log.warning("pipeline %s: cannot be deployed as it is now: %s", pipeline.id, err)
                return False
            expected = _DESCRIPTION_PREFIX + _fingerprint(source, self._values(pipeline, token))
            if (current.description or "") != expected:
                log.warning("pipeline %s: release %s is stale", pipeline.id, names.release)
                return False
            return True

    async def _unstick(self, pipeline: Pipeline, names: PipelineNames) -> None:
        """A release left pending by a helm that died mid-operation (the API restarted, its
        pod was evicted) blocks every later one. Once it is older than an operation may
        take, finish it as helm would have failed it: uninstall a pending install, roll
        back a pending upgrade. A recent one is another replica's, still running."""
        current = await self._helm().get_current_revision(names.release, namespace=names.namespace)
        updated = current.updated
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=dt.UTC)
        age_s = (dt.datetime.now(dt.UTC) - updated).total_seconds()
        if age_s < self._options.timeout_s + _PENDING_SLACK_S:
            raise HelmUnavailable(
                f"release {names.release} is {current.status.value} since {age_s:.0f} s: "
                "another helm operation is under way; trying again later"
            )
        log.warning(
            "pipeline %s: release %s has been %s for %.0f s; %s",
            pipeline.id,
            names.release,
            current.status.value,
            age_s,
            "uninstalling it" if current.status in _UNINSTALL_WHEN else "rolling it back",
        )
        if current.status in _UNINSTALL_WHEN:
            await current.release.uninstall(wait=False)
        else:
            await current.release.rollback(
                cleanup_on_fail=True, timeout=f"{self._options.timeout_s}s", wait=False
            )

    # -- helpers -----------------------------------------------------------------------------

    def _helm(self) -> Client:
        if self._client is None:
            try:
                self._client = Client(
                    executable=self._options.executable,
                    kubeconfig=self._options.kubeconfig,
                    kubecontext=self._options.kube_context,
                    default_timeout=f"{self._options.timeout_s}s",
                )
            except (AssertionError, OSError, helm_errors.Error) as err:
                # pyhelm3 asserts the executable exists.
                raise HelmUnavailable(
                    f"cannot run helm ({self._options.executable!r}): {err or 'not found'}; "
                    "set WSCHED_HELM_EXECUTABLE"
                ) from err
        return self._client

    def _kube(self) -> k8s.ApiClient:
        if self._api is None:
            self._api = kube.api_client(self._options.kubeconfig, self._options.kube_context)
        return self._api

    async def _names(self, pipeline: Pipeline) -> PipelineNames:
        names = await asyncio.to_thread(self._names_of, pipeline.id)
        if names is None:
            raise DeployFailed(f"pipeline {pipeline.id} no longer exists")
        return names

    async def _recorded_names(self, pipeline: Pipeline) -> tuple[str, str]:
        """The release as deployed (recorded with the pipeline), else as it would be named."""
        release = pipeline.deployment.get("release")
        namespace = pipeline.deployment.get("namespace")
        if isinstance(release, str) and release and isinstance(namespace, str) and namespace:
            return release, namespace
        names = await asyncio.to_thread(self._names_of, pipeline.id)
        if names is None:
            return "", ""
        return names.release, names.namespace

    async def _ensure_namespace(self, names: PipelineNames) -> None:
        try:
            api = self._kube()
            await asyncio.to_thread(
                kube.ensure_namespace, api, names.namespace, tenant=names.tenant
            )
        except ApiException as err:
            if err.status in (401, 403):
                raise DeployFailed(
                    f"not allowed to create or label namespace {names.namespace}: "
                    f"{err.reason} (the API's service account needs namespaces "
                    "get/create/patch)"
                ) from err
            raise HelmUnavailable(f"namespace {names.namespace}: {err.reason}") from err
        except (kube.KubeUnavailable, OSError) as err:
            raise HelmUnavailable(str(err)) from err
        except Exception as err:  # urllib3's connection errors and the like
            raise HelmUnavailable(f"the Kubernetes API is unreachable: {err}") from err

    async def _token(self, pipeline_id: str) -> str:
        try:
            return await asyncio.to_thread(self._token_of, pipeline_id)
        except ControlError as err:
            raise DeployFailed(f"cannot deploy workers without the worker token: {err}") from err

    async def _source(self, pipeline: Pipeline) -> ChartSource:
        source = await asyncio.to_thread(
            chart_source, pipeline.chart, pipeline.chart_version, base_dir=self._options.base_dir
        )
        if not source.directory:
            return source
        return await self._prepared_source(source)

    async def _prepared_source(self, source: ChartSource) -> ChartSource:
        """A local directory whose ``file://`` dependencies are built into a private copy
        (helm refuses a chart whose dependencies are missing from ``charts/``)."""
        directory = Path(source.ref)
        digest = await asyncio.to_thread(_tree_digest, directory)
        if not await asyncio.to_thread(_local_dependencies, directory):
            return ChartSource(ref=source.ref, version=source.version, digest=digest)
        # One build per chart content, however many pipelines deploy it at once.
        async with self._building.setdefault(digest, asyncio.Lock()):
            prepared = self._prepared.get(digest)
            if prepared is None or not await asyncio.to_thread(prepared.is_dir):
                prepared = await self._build_dependencies(directory, digest)
                self._prepared[digest] = prepared
        return ChartSource(ref=str(prepared), version=source.version, digest=digest)

    async def _build_dependencies(self, directory: Path, digest: str) -> Path:
        target = self._options.work_dir / "charts" / digest[:16] / directory.name
        if await asyncio.to_thread((target / ".wsched-built").is_file):
            return target
        await asyncio.to_thread(self._options.work_dir.mkdir, parents=True, exist_ok=True)
        staging = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix="chart-", dir=self._options.work_dir)
        )
        copy = staging / directory.name
        await asyncio.to_thread(_copy_with_absolute_dependencies, directory, copy)
        process = await asyncio.create_subprocess_exec(
            self._options.executable,
            "dependency",
            "build",
            str(copy),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            message = (err or out).decode(errors="replace").strip()
            raise DeployFailed(f"helm dependency build {directory}: {message}"[:_MAX_MESSAGE])
        await asyncio.to_thread(_install_built, copy, target)
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        return target

    def _values(self, pipeline: Pipeline, token: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self._options.worker_image:
            values = {"image": _image(self._options.worker_image)}
        values = merge_values(values, pipeline.values)
        if pipeline.scaling:
            values = merge_values(values, {"scaling": dict(pipeline.scaling)})
        injected: dict[str, Any] = {
            "pipelineId": pipeline.id,
            "scheduler": {"address": self._options.scheduler},
            "workerToken": {"value": token},
        }
        if self._options.autoscaler == "builtin":
            injected["scaling"] = {"autoscaler": "builtin"}
        return merge_values(values, injected)

    def _lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())


def chart_source(chart: str, version: str | None, *, base_dir: Path) -> ChartSource:
    """Where a pipeline's ``chart`` points (see the module's docstring)."""
    if chart.startswith("oci://"):
        return ChartSource(ref=chart, version=version)
    if chart.startswith(("https://", "http://")):
        if chart.endswith((".tgz", ".tar.gz")):
            return ChartSource(ref=chart)
        repo, _, name = chart.rstrip("/").rpartition("/")
        if not name or repo.endswith(":/"):
            raise DeployFailed(
                f"chart {chart!r}: give a chart repository URL followed by the chart's "
                "name, e.g. https://charts.example.com/stable/echo"
            )
        return ChartSource(ref=name, repo=repo, version=version)
    path = local_chart_path(chart, base_dir=base_dir)
    if path.is_dir():
        if not (path / "Chart.yaml").is_file():
            raise DeployFailed(f"chart {chart!r}: {path} is not a Helm chart (no Chart.yaml)")
        return ChartSource(ref=str(path), version=version, directory=True)
    if path.is_file():
        return ChartSource(ref=str(path))
    raise DeployFailed(
        f"chart {chart!r} is neither a local chart (looked for {path}), an oci:// reference "
        "nor an http(s) URL"
    )


def names_from_store(
    lookup: Callable[[str], tuple[str, str, str] | None],
) -> Callable[[str], PipelineNames | None]:
    """Adapts the control store's ``(tenant, application, pipeline)`` name lookup."""

    def names_of(pipeline_id: str) -> PipelineNames | None:
        found = lookup(pipeline_id)
        if found is None:
            return None
        tenant, application, pipeline = found
        return PipelineNames(tenant=tenant, application=application, pipeline=pipeline)

    return names_of


def _classified(err: helm_errors.Error, what: str) -> Exception:
    """Helm's own words: a definite failure (bad chart, refused values) is DeployFailed,
    shown as the pipeline's reason; an unreachable cluster is worth retrying."""
    message = (err.stderr or err.stdout).decode(errors="replace").strip()
    message = message.removeprefix("Error: ").strip() or f"exit {err.returncode}"
    text = f"{what}: {message}"[:_MAX_MESSAGE]
    transient = helm_errors.ConnectionError | helm_errors.CommandCancelledError
    if isinstance(err, transient) or _IN_PROGRESS in str(err):
        return HelmUnavailable(text)
    return DeployFailed(text)


def _image(reference: str) -> dict[str, str]:
    """``repository[:tag]`` (a registry's port is not a tag) as the chart's ``image``."""
    repository, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return {"repository": reference}
    return {"repository": repository, "tag": tag}


def _fingerprint(source: ChartSource, values: Mapping[str, Any]) -> str:
    def hidden(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: (
                    hashlib.sha256(str(v).encode()).hexdigest() if k == "workerToken" else hidden(v)
                )
                for k, v in value.items()
            }
        return value

    document = {
        "ref": source.ref if source.repo or not source.digest else "",
        "repo": source.repo,
        "version": source.version,
        "digest": source.digest,
        "values": hidden(values),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def _install_built(copy: Path, target: Path) -> None:
    (copy / ".wsched-built").touch()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    copy.rename(target)


def _local_dependencies(directory: Path) -> list[dict[str, Any]]:
    try:
        meta = yaml.safe_load((directory / "Chart.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DeployFailed(f"cannot read {directory / 'Chart.yaml'}: {err}") from err
    dependencies = meta.get("dependencies") or [] if isinstance(meta, dict) else []
    return [d for d in dependencies if isinstance(d, dict)]


def _tree_digest(directory: Path) -> str:
    """The chart's files and, recursively, those of its ``file://`` dependencies."""
    digest = hashlib.sha256()
    seen: set[Path] = set()

    def add(root: Path) -> None:
        root = root.resolve()
        if root in seen:
            return
        seen.add(root)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
        for dependency in _local_dependencies(root):
            repository = str(dependency.get("repository", ""))
            if repository.startswith("file://"):
                add(root / repository.removeprefix("file://"))

    add(directory)
    return digest.hexdigest()


def _copy_with_absolute_dependencies(source: Path, target: Path) -> None:
    """Copy a chart, pointing its relative ``file://`` dependencies at the originals."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = target / "Chart.yaml"
    meta = yaml.safe_load(chart_yaml.read_text())
    for dependency in meta.get("dependencies") or []:
        repository = str(dependency.get("repository", ""))
        if repository.startswith("file://"):
            location = Path(repository.removeprefix("file://"))
            if not location.is_absolute():
                location = (source / location).resolve()
            dependency["repository"] = f"file://{location}"
    chart_yaml.write_text(yaml.safe_dump(meta, sort_keys=False))
    # A chart's own vendored dependencies (charts/*.tgz) come along.
    vendored = source / "charts"
    if vendored.is_dir():
        shutil.copytree(vendored, target / "charts")
