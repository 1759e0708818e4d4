"""The blocking client: :class:`Client` and its sub-clients (tenants, applications,
pipelines; tasks in ``_sync_tasks``, schedules in ``_sync_schedules``).

Every method builds a :class:`~wsched.client._calls.Call` and sends it through
:meth:`Client._send`, the one place that talks HTTP, maps error answers to exceptions and
retries what is safe to retry. ``AsyncClient`` (``_async``) mirrors this module method
for method.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from wsched._version import __version__
from wsched.client import _calls as calls
from wsched.client._errors import ConnectionFailed, PipelineFailed, PipelineTimeout, error_from
from wsched.client._models import (
    Application,
    Pipeline,
    PipelineCreated,
    PipelineDeleting,
    Rotated,
    Tenant,
    TenantCreated,
    TenantQuotas,
    TenantStatus,
)
from wsched.client._options import Duration, TaskRetry
from wsched.client._retry import RequestRetry, log_retry, parse_retry_after
from wsched.client._specs import pipeline_fields, pipeline_spec, with_state
from wsched.client._sync_schedules import Schedules
from wsched.client._sync_tasks import Tasks
from wsched.client._task_calls import MAX_BATCH_BYTES, MAX_BATCH_ITEMS
from wsched.client._waiting import LongPoll, WaitStrategy

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"


class Client:
    """A tenant's (or the operator's) connection to the HTTP API, blocking.

    ``api_key`` is a tenant's key, or the operator's for :attr:`tenants`. Use it as a
    context manager, or call :meth:`close`, so its connections are released. Requests the
    API answers 503 or 429 are retried as ``retry`` says when they are safe to repeat;
    ``batch_items`` and ``batch_bytes`` bound each request of :meth:`Tasks.submit_many`
    (lower ``batch_items`` if the operator lowered ``WSCHED_MAX_BATCH_ITEMS``).
    ``transport`` replaces the network (``httpx.MockTransport`` in tests); ``sleep`` and
    ``clock`` let tests run retries and waits without waiting.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str,
        timeout_s: float = 60.0,
        retry: RequestRetry | None = None,
        batch_items: int = MAX_BATCH_ITEMS,
        batch_bytes: int = MAX_BATCH_BYTES,
        wait: WaitStrategy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.Client(
            base_url=url,
            headers=_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self._retry = retry or RequestRetry()
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.wait_strategy: WaitStrategy = wait or LongPoll()
        self.sleep = sleep
        self.clock = clock
        #: Tenants: create and list (with the operator's key).
        self.tenants = Tenants(self)
        #: The tenant's applications.
        self.applications = Applications(self)
        #: Pipelines of an application.
        self.pipelines = Pipelines(self)

    @property
    def url(self) -> str:
        """The API's base URL."""
        return str(self._http.base_url)

    def tasks(self, app: str, pipeline: str) -> Tasks:
        """The tasks of one pipeline: submit, read, list, cancel, requeue."""
        return Tasks(self, app, pipeline)

    def schedules(self, app: str, pipeline: str) -> Schedules:
        """The schedules of one pipeline: create, read, change, pause, trigger, backfill."""
        return Schedules(self, app, pipeline)

    def close(self) -> None:
        """Release the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: calls.Call[T]) -> T:
        """Send ``call``; retry it while allowed; read the answer or raise its error."""
        attempt = 1
        while True:
            response = self._request(call)
            if response.is_success:
                return call.read(response)
            retry_after = response.headers.get("Retry-After")
            delay = (
                self._retry.delay_s(
                    status=response.status_code, retry_after=retry_after, attempt=attempt
                )
                if call.retryable
                else None
            )
            if delay is None:
                raise error_from(response, retry_after_s=parse_retry_after(retry_after))
            log_retry(call.method, call.path, response.status_code, delay, attempt)
            self.sleep(delay)
            attempt += 1

    def _lines(self, path: str, headers: dict[str, str]) -> Iterator[str]:
        """The lines of a streamed answer (an event stream), read as they arrive."""
        try:
            with self._http.stream(
                "GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise error_from(response)
                yield from response.iter_lines()
        except httpx.TransportError as err:
            raise ConnectionFailed(self.url, str(err) or type(err).__name__) from err

    def _request(self, call: calls.Call[Any]) -> httpx.Response:
        try:
            return self._http.request(
                call.method,
                call.path,
                params=dict(call.params),
                content=call.body,
                headers=_JSON if call.body is not None else None,
            )
        except httpx.TransportError as err:
            raise ConnectionFailed(self.url, str(err) or type(err).__name__) from err


_JSON = {"Content-Type": "application/json"}


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": f"wsched-python/{__version__}"}


class Tenants:
    """Tenants, managed by the operator: the client must hold the operator's key (but
    for :meth:`me`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str) -> TenantCreated:
        """Create a tenant; its ``api_key`` is in this answer only: keep it."""
        return self._client._send(calls.create_tenant(name))

    def list(self) -> list[Tenant]:
        """Every tenant."""
        return self._client._send(calls.list_tenants())

    def get(self, name: str) -> TenantQuotas:
        """One tenant with its quotas and usage; for the operator also its state and
        how far its deletion got."""
        return self._client._send(calls.get_tenant(name))

    def set_quotas(self, name: str, **quotas: float | None) -> TenantQuotas:
        """Override the tenant's quotas (``max_pipelines``, ``max_backlog``,
        ``submit_rate``, ``submit_burst``, ``max_request_bytes``): those given change,
        None returns one to the operator's default, 0 makes it unbounded."""
        return self._client._send(calls.set_tenant_quotas(name, quotas))

    def me(self) -> TenantQuotas:
        """With a tenant's key: that tenant, its quotas and its usage."""
        return self._client._send(calls.own_tenant())

    def rotate_key(self, name: str, *, grace_s: int = 0) -> Rotated:
        """A new API key (in this answer only); the current one stays valid ``grace_s``."""
        return self._client._send(calls.rotate_key(name, grace_s))

    def revoke_key(self, name: str) -> None:
        """Refuse every key of the tenant at once; :meth:`rotate_key` issues a new one."""
        self._client._send(calls.revoke_key(name))

    def delete(self, name: str) -> TenantStatus:
        """Start deleting the tenant (pipelines, namespace, tasks, rows); :meth:`get`
        shows the progress. Harmless to repeat."""
        return self._client._send(calls.delete_tenant(name))


class Applications:
    """A tenant's applications: named groups of pipelines."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str) -> Application:
        """Create an application (409 ``name_taken`` if the tenant has one so named)."""
        return self._client._send(calls.create_application(name))

    def list(self) -> list[Application]:
        """The tenant's applications."""
        return self._client._send(calls.list_applications())

    def get(self, name: str) -> Application:
        """One application by name."""
        return self._client._send(calls.get_application(name))

    def delete(self, name: str) -> None:
        """Delete an application; it must have no pipelines left (409 ``has_pipelines``)."""
        self._client._send(calls.delete_application(name))


class Pipelines:
    """Pipelines: a Helm chart whose workers run an application's tasks."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        app: str,
        name: str,
        *,
        chart: str,
        chart_version: str | None = None,
        values: Mapping[str, Any] | None = None,
        topic: Literal["dedicated", "shared"] | None = None,
        partitions: int | None = None,
        scaling: Mapping[str, Any] | None = None,
        max_attempts: int | None = None,
        retry: TaskRetry | None = None,
        lease_timeout_s: int | None = None,
        retention: Duration | None = None,
        expires_after: Duration | None = None,
        wait_ready_s: float | None = None,
    ) -> PipelineCreated:
        """Create a pipeline; its ``worker_token`` is in this answer only.

        ``chart`` is a chart directory or .tgz, ``oci://...``, or a chart repository URL
        followed by the chart's name; the settings are those of :meth:`update`.
        ``topic`` is ``"dedicated"`` (a Kafka topic of its own, over ``partitions``) or
        ``"shared"`` (one partition of the topic small pipelines share: ``partitions``
        must then be left out or 1); None: a topic of its own if ``partitions`` is above
        1, else the API's default (``WSCHED_PIPELINE_TOPIC``, ``"shared"`` unless the
        operator set it). Neither changes later.
        The pipeline starts ``provisioning``; with ``wait_ready_s`` this returns once it
        is ready (the answer's ``state`` says so), raising :class:`PipelineFailed` if
        provisioning fails.
        """
        spec = pipeline_spec(
            name,
            partitions,
            pipeline_fields(
                chart=chart,
                chart_version=chart_version,
                values=values,
                scaling=scaling,
                max_attempts=max_attempts,
                retry=retry,
                lease_timeout_s=lease_timeout_s,
                retention=retention,
                expires_after=expires_after,
            ),
            topic=topic,
        )
        created = self._client._send(calls.create_pipeline(app, spec))
        if wait_ready_s is None:
            return created
        ready = self.wait_ready(app, name, timeout_s=wait_ready_s)
        return with_state(created, ready.state)

    def list(self, app: str) -> list[Pipeline]:
        """The application's pipelines, those being deleted included."""
        return self._client._send(calls.list_pipelines(app))

    def get(self, app: str, name: str) -> Pipeline:
        """One pipeline, with its state, deployment and counts."""
        return self._client._send(calls.get_pipeline(app, name))

    def update(
        self,
        app: str,
        name: str,
        *,
        chart: str | None = None,
        chart_version: str | None = None,
        values: Mapping[str, Any] | None = None,
        scaling: Mapping[str, Any] | None = None,
        max_attempts: int | None = None,
        retry: TaskRetry | None = None,
        lease_timeout_s: int | None = None,
        retention: Duration | None = None,
        expires_after: Duration | None = None,
    ) -> Pipeline:
        """Change what is given (the chart is deployed again, a new Helm revision);
        ``expires_after=0`` clears the tasks' default deadline."""
        changes = pipeline_fields(
            chart=chart,
            chart_version=chart_version,
            values=values,
            scaling=scaling,
            max_attempts=max_attempts,
            retry=retry,
            lease_timeout_s=lease_timeout_s,
            retention=retention,
            expires_after=expires_after,
        )
        return self._client._send(calls.update_pipeline(app, name, changes))

    def rotate_token(self, app: str, name: str, *, grace_s: int = 0) -> Rotated:
        """A new worker token (in this answer only); the workers are deployed again with
        it and the current one stays valid ``grace_s``."""
        return self._client._send(calls.rotate_token(app, name, grace_s))

    def delete(self, app: str, name: str) -> PipelineDeleting:
        """Start deleting: the name is free at once; workers, topic and tasks go later."""
        return self._client._send(calls.delete_pipeline(app, name))

    def wait_ready(self, app: str, name: str, *, timeout_s: float = 120.0) -> Pipeline:
        """Read the pipeline until it is ready; :class:`PipelineFailed` if it failed."""
        deadline = self._client.clock() + timeout_s
        while self._client.clock() < deadline:
            pipeline = self.get(app, name)
            if pipeline.state == "failed":
                raise PipelineFailed(name, pipeline.reason)
            if pipeline.state == "ready":
                return pipeline
            self._client.sleep(0.5)
        raise PipelineTimeout(name, timeout_s)
