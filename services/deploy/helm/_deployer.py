"""The Helm deployer itself: the :class:`~services.deploy.ports.Deployer` port over helm
and the Kubernetes API (releases, tenant namespaces, a release a dead helm left pending).

Each deploy puts the tenant's namespace in line with the operator's policy
(:mod:`services.deploy.tenancy`), checks the chart against the allow-list, renders it
with helm acting as the tenant through the post-renderer (a server-side dry run), has
the namespace's admission judge a Pod from each pod template, and only then installs.

Where charts come from, the values and the fingerprint, and the dependency builds are
the package's other modules; :mod:`services.deploy.helm` says what the deployer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pyhelm3 import Client
from pyhelm3 import errors as helm_errors
from pyhelm3.models import ReleaseRevisionStatus

from services.deploy import kube
from services.deploy.helm._admission import DryRunUnavailable, admission_refusals
from services.deploy.helm._as_tenant import TenantCommand, post_renderer, tenant_client
from services.deploy.helm._dependencies import DependencyBuilder
from services.deploy.helm._errors import IN_PROGRESS, HelmUnavailable, classified
from services.deploy.helm._options import HelmOptions, PipelineNames
from services.deploy.helm._scrub import scrubbed
from services.deploy.helm._sources import ChartSource, chart_source
from services.deploy.helm._values import release_description, release_values
from services.deploy.ports import DeployFailed, DeploymentStatus
from services.deploy.tenancy import ensure_tenant, remove_namespace
from services.store.control import ControlError, Pipeline

log = logging.getLogger("wsched.deploy.helm")

KIND = "helm"
#: Past the helm timeout, how long a pending release may be another replica's operation.
_PENDING_SLACK_S = 60
_UNINSTALL_WHEN = frozenset(
    {ReleaseRevisionStatus.PENDING_INSTALL, ReleaseRevisionStatus.UNINSTALLING}
)
T = TypeVar("T")


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
        self._clients: dict[str, tuple[Client, TenantCommand]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dependencies = DependencyBuilder(
            executable=options.executable, work_dir=options.work_dir
        )

    # -- the port ----------------------------------------------------------------------------

    async def deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        async with self._lock(pipeline.id):
            with self._for_tenant(pipeline.chart):
                return await self._deploy(pipeline)

    async def _deploy(self, pipeline: Pipeline) -> DeploymentStatus:
        names = await self._names(pipeline)
        await self._ensure_tenant(names)
        source = await self._source(pipeline)
        token = await self._token(pipeline.id)
        values = self._values(pipeline, token)
        client, command = self._helm(names.namespace)
        try:
            chart = await client.get_chart(source.ref, repo=source.repo, version=source.version)
            dry_run = functools.partial(self._admitted, command, names, source, values)
            await self._unstuck(pipeline, names, dry_run)
            install = functools.partial(
                client.install_or_upgrade_release,
                names.release,
                chart,
                values,
                namespace=names.namespace,
                create_namespace=False,
                description=release_description(source, values),
                timeout=f"{self._options.timeout_s}s",
                wait=False,
            )
            revision = await self._unstuck(pipeline, names, install)
        except helm_errors.Error as err:
            raise classified(err, f"helm upgrade --install {names.release}") from err
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
            client, _ = self._helm(namespace)
            with self._for_tenant(pipeline.chart):
                # A release installed before helm acted as the tenant: prepare the
                # account it is now uninstalled as.
                names = await asyncio.to_thread(self._names_of, pipeline.id)
                if names is not None and names.namespace == namespace:
                    await self._ensure_tenant(names)
                try:
                    await client.uninstall_release(release, namespace=namespace, wait=False)
                except helm_errors.Error as err:
                    raise classified(err, f"helm uninstall {release}") from err
            log.info("pipeline %s: release %s/%s uninstalled", pipeline.id, namespace, release)

    async def in_place(self, pipeline: Pipeline) -> bool:
        """Whether the pipeline's release exists, deployed, from what would be deployed now."""
        async with self._lock(pipeline.id):
            names = await self._names(pipeline)
            # The account helm reads the release as (also for releases older than it).
            with self._for_tenant(pipeline.chart):
                await self._ensure_tenant(names)
            client, _ = self._helm(names.namespace)
            try:
                current = await client.get_current_revision(
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
                raise classified(err, f"helm status {names.release}") from err
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
            expected = release_description(source, self._values(pipeline, token))
            if (current.description or "") != expected:
                log.warning("pipeline %s: release %s is stale", pipeline.id, names.release)
                return False
            return True

    async def remove_tenant(self, namespace: str) -> None:
        """Delete the namespace, if it is one this deployer prepared (labelled by
        :mod:`services.deploy.tenancy`): never another that happens to bear the name."""
        try:
            await asyncio.to_thread(remove_namespace, self._kube(), namespace)
        except ApiException as err:
            raise HelmUnavailable(f"namespace {namespace}: {err.reason}") from err
        except (kube.KubeUnavailable, OSError) as err:
            raise HelmUnavailable(str(err)) from err
        log.info("namespace %s is being deleted", namespace)

    async def _unstick(self, pipeline: Pipeline, names: PipelineNames) -> None:
        """A release left pending by a helm that died mid-operation (the API restarted, its
        pod was evicted) blocks every later one. Once it is older than an operation may
        take, finish it as helm would have failed it: uninstall a pending install, roll
        back a pending upgrade. A recent one is another replica's, still running."""
        client, _ = self._helm(names.namespace)
        current = await client.get_current_revision(names.release, namespace=names.namespace)
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

    def _helm(self, namespace: str) -> tuple[Client, TenantCommand]:
        """helm acting as the tenant of ``namespace`` (one client per namespace)."""
        if namespace not in self._clients:
            options = self._options
            try:
                self._clients[namespace] = tenant_client(
                    user=options.tenants.user(namespace),
                    post_renderer=post_renderer(
                        options.post_renderer,
                        namespace=namespace,
                        kinds=options.kinds,
                        deployer_account=options.tenants.service_account,
                    ),
                    executable=options.executable,
                    kubeconfig=options.kubeconfig,
                    kube_context=options.kube_context,
                    timeout_s=options.timeout_s,
                )
            except (AssertionError, OSError, helm_errors.Error) as err:
                # pyhelm3 asserts the executable exists.
                raise HelmUnavailable(
                    f"cannot run helm ({options.executable!r}): {err or 'not found'}; "
                    "set WSCHED_HELM_EXECUTABLE"
                ) from err
        return self._clients[namespace]

    async def _unstuck(
        self, pipeline: Pipeline, names: PipelineNames, operation: Callable[[], Awaitable[T]]
    ) -> T:
        """``operation``, once more after finishing a release a dead helm left pending."""
        try:
            return await operation()
        except helm_errors.Error as err:
            if IN_PROGRESS not in str(err):
                raise
            await self._unstick(pipeline, names)
            return await operation()

    async def _admitted(
        self,
        command: TenantCommand,
        names: PipelineNames,
        source: ChartSource,
        values: dict[str, Any],
    ) -> None:
        """Render as the install will (post-renderer included, server-side ``lookup``) and
        have the namespace's admission judge each pod; DeployFailed says what it refused."""
        release = await command.install_or_upgrade(
            names.release,
            source.ref,
            values,
            namespace=names.namespace,
            create_namespace=False,
            dry_run=True,
            repo=source.repo,
            version=source.version,
            timeout=f"{self._options.timeout_s}s",
        )
        release = release if isinstance(release, dict) else {}
        hooks = [str(hook.get("name")) for hook in release.get("hooks") or []]
        if hooks:
            # Helm 3 does not pass hooks through the post-renderer: they are never run.
            raise DeployFailed(
                f"the chart has hooks ({', '.join(hooks)}), which a pipeline chart may not "
                "have: render them as ordinary objects"
            )
        manifest = str(release.get("manifest") or "")
        user = self._options.tenants.user(names.namespace)
        try:
            with self._kube_as(user) as api:
                refused = await asyncio.to_thread(
                    admission_refusals, api, names.namespace, manifest
                )
        except (DryRunUnavailable, kube.KubeUnavailable, OSError) as err:
            raise HelmUnavailable(str(err)) from err
        if refused:
            raise DeployFailed(
                f"namespace {names.namespace} does not admit the chart's pods: "
                + "; ".join(refused)
            )

    @contextlib.contextmanager
    def _kube_as(self, user: str) -> Iterator[k8s.ApiClient]:
        """A Kubernetes client impersonating ``user``."""
        api = kube.api_client(self._options.kubeconfig, self._options.kube_context)
        api.set_default_header("Impersonate-User", user)  # type: ignore[no-untyped-call]
        with api:
            yield api

    @contextlib.contextmanager
    def _for_tenant(self, chart: str) -> Iterator[None]:
        """Every failure's message, as the tenant will read it: no path or address of
        this machine (see :mod:`._scrub`) but the chart as the tenant gave it."""
        known = [
            (self._options.work_dir.resolve() / "charts", "<prepared chart>"),
            (self._options.base_dir.resolve(), "."),
            (self._options.base_dir, "."),
        ]
        try:
            yield
        except DeployFailed as err:
            raise DeployFailed(scrubbed(str(err), known=known, keep=[chart])) from err
        except HelmUnavailable as err:
            raise HelmUnavailable(scrubbed(str(err), known=known, keep=[chart])) from err

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

    async def _ensure_tenant(self, names: PipelineNames) -> None:
        try:
            api = self._kube()
            await asyncio.to_thread(
                ensure_tenant,
                api,
                names.namespace,
                tenant=names.tenant,
                policy=self._options.tenants,
            )
        except ApiException as err:
            if err.status in (401, 403):
                raise DeployFailed(
                    f"not allowed to prepare namespace {names.namespace}: {err.reason} (the "
                    "API's service account needs the rights the scheduler chart's rbac.yaml "
                    "gives it)"
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
        await asyncio.to_thread(self._options.charts.check, pipeline.chart)
        source = await asyncio.to_thread(
            chart_source, pipeline.chart, pipeline.chart_version, base_dir=self._options.base_dir
        )
        if not source.directory:
            return source
        return await self._dependencies.prepared(source)

    def _values(self, pipeline: Pipeline, token: str) -> dict[str, Any]:
        return release_values(
            pipeline,
            token,
            scheduler=self._options.scheduler,
            worker_image=self._options.worker_image,
            autoscaler=self._options.autoscaler,
            observability=(
                self._options.observability.values() if self._options.observability else None
            ),
        )

    def _lock(self, pipeline_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline_id, asyncio.Lock())
