"""FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.api import errors
from services.api.context import ApiContext
from services.api.fair_pool import WORKERS, FairShare
from services.api.limits import Limits
from services.api.metrics import ApiMetrics
from services.api.middleware import BodyLimit, RequestMetrics
from services.api.quotas import EarlyRefusal, QuotaGuard, default_quotas
from services.api.reconciler import Reconciler
from services.api.routes import (
    applications,
    bulk,
    fast_submit,
    live,
    pipelines,
    schedules,
    submits,
    tasks,
    tenants,
)
from services.api.tracing import TracedProducer, trace_requests
from services.api.ui import routes as dashboard
from services.api.ui.headers import DashboardHeaders
from services.deploy import helm, local
from services.deploy.ports import Deployer, NoopDeployer
from services.deploy.tenancy import TenantPolicy
from services.health import check_database, check_kafka
from services.kafka.admin import KafkaTopicAdmin, TopicAdmin
from services.kafka.event_reader import KafkaEventSource
from services.kafka.producer import EventProducer, KafkaProducer
from services.kafka.revocations import KafkaRevocations
from services.live.hub import LiveHub
from services.live.source import EventSource, MemoryEventLog
from services.observability import Tracing, setup_tracing
from services.settings import Settings
from services.store.control import ControlStore
from services.store.engine import make_engine
from services.store.tokens import TokenCipher


def chart_allow_list(settings: Settings) -> helm.ChartAllowList:
    """The chart sources tenants may name; relative chart paths are taken from the
    working directory."""
    try:
        return helm.ChartAllowList(
            roots=settings.chart_roots,
            repositories=settings.chart_repositories,
            base_dir=Path.cwd(),
        )
    except ValueError as err:
        raise ValueError(f"WSCHED_CHART_REPOSITORIES: {err}") from err


def tenant_policy(settings: Settings) -> TenantPolicy:
    """What the Helm deployer makes of each tenant namespace (``WSCHED_TENANT_*``)."""
    return TenantPolicy(
        service_account=settings.tenant_service_account,
        cluster_role=settings.tenant_cluster_role,
        pod_security=settings.tenant_pod_security,
        pod_security_overrides=dict(settings.tenant_pod_security_overrides),
        quota=settings.tenant_quota,
        default_limits=settings.tenant_default_limits,
        default_requests=settings.tenant_default_requests,
        network_policy=settings.tenant_network_policy,
        scheduler_namespace=settings.scheduler_namespace,
        scheduler_pod_labels=settings.scheduler_pod_labels,
        scheduler_port=settings.workers_scheduler_port(),
        dns_namespace=settings.dns_namespace,
        extra_egress=tuple(settings.tenant_extra_egress),
    )


def workers_observability(settings: Settings) -> helm.WorkerObservability | None:
    """What deployed workers are told of traces and logs: this process's own settings,
    when ``WSCHED_WORKERS_OBSERVABILITY`` says so; else nothing (each chart's own)."""
    if not settings.workers_observability:
        return None
    return helm.WorkerObservability(
        otlp_endpoint=settings.otlp_endpoint, log_format=settings.log_format
    )


def make_deployer(settings: Settings, store: ControlStore) -> Deployer:
    """The deployer ``WSCHED_DEPLOYER`` names."""
    if settings.deployer == "helm":
        return helm.HelmDeployer(
            options=helm.HelmOptions(
                scheduler=settings.workers_scheduler_address(),
                base_dir=Path.cwd(),
                charts=chart_allow_list(settings),
                tenants=tenant_policy(settings),
                kinds=tuple(settings.tenant_kinds),
                work_dir=settings.data_dir / "helm",
                executable=settings.helm_executable,
                kubeconfig=settings.kubeconfig,
                kube_context=settings.kube_context,
                worker_image=settings.worker_image,
                autoscaler=settings.autoscaler,
                timeout_s=settings.helm_timeout_s,
                observability=workers_observability(settings),
            ),
            token_of=store.worker_token,
            names_of=helm.names_from_store(store.pipeline_names),
        )
    if settings.deployer == "local":
        options = local.LocalOptions(
            data_dir=settings.data_dir,
            scheduler=settings.advertised_grpc(),
            # Charts are paths relative to where the API (or `wsched dev`) was started.
            base_dir=Path.cwd(),
            log_level=settings.log_level,
            log_format=settings.log_format,
            otlp_endpoint=settings.otlp_endpoint,
        )
        return local.LocalDeployer(options=options, token_of=store.worker_token)
    return NoopDeployer()


def describe_limits(limits: Limits) -> str:
    """The bounds this API enforces, for its OpenAPI description (the values in force)."""
    return (
        'Every error is JSON `{"error": <code>, "detail": <what was wrong, what to do>}`.\n\n'
        "Bounds (a body's size and nesting are checked before anything parses it):\n\n"
        f"- a request body: at most {limits.max_request_bytes} bytes "
        "(413 `request_too_large`);\n"
        f"- JSON nesting: at most {limits.max_json_depth} levels of arrays and objects in a "
        "body, a batch's own `{tasks: [{data}]}` counting as three (400 `json_too_deep`);\n"
        f"- a task's data: at most {limits.max_task_data_bytes} bytes "
        "(413 `data_too_large`);\n"
        f"- a batch: at most {limits.max_batch_items} tasks (413 `batch_too_large`);\n"
        f"- a page of tasks: at most {limits.max_page_size}.\n\n"
        "An unexpected failure answers 500 `internal` with an incident id to report; the "
        "server logs the error under that id."
    )


def make_event_source(settings: Settings) -> EventSource:
    """``wsched.events`` on the configured Kafka; without one, an empty log (waiters then
    answer at their timeout, as after a lost event)."""
    if not settings.kafka_bootstrap:
        return MemoryEventLog()
    admin = KafkaTopicAdmin(
        bootstrap=settings.kafka_bootstrap, replication_factor=settings.kafka_replication_factor
    )
    return KafkaEventSource(bootstrap=settings.kafka_bootstrap, admin=admin)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None], *, name: str) -> AsyncIterator[None]:
    """``work`` runs for as long as the app does (a reader of a topic), then is cancelled."""
    reader = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def _since(at_ms: int) -> float:
    """Seconds from a time in ms since the epoch to now (0 if the clocks disagree)."""
    return max(0.0, time.time() - at_ms / 1000)


def create_app(
    settings: Settings,
    *,
    limits: Limits | None = None,
    producer: EventProducer | None = None,
    admin: TopicAdmin | None = None,
    deployer: Deployer | None = None,
    events: EventSource | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The API. Ports not given are built from ``settings`` and owned by the app (started
    and stopped with it); ports given are the caller's to start and stop (``tracing``
    too: a test's in-memory exporter)."""
    limits = limits or Limits.from_settings(settings)
    # A connection for each database thread and for the calls made outside them (health
    # checks, the reconciler's): with fewer, every call past the pool opened a connection
    # and closed it again, which profiling showed under a burst of single submits.
    engine = make_engine(settings.effective_database_url(), pool_size=WORKERS + 4)
    store = ControlStore(engine=engine, cipher=TokenCipher(key=settings.effective_secret_key()))
    own_deployer = deployer is None
    the_deployer = make_deployer(settings, store) if deployer is None else deployer
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry=registry)
    own_producer = KafkaProducer(
        bootstrap=settings.kafka_bootstrap or "",
        deadline_s=limits.produce_deadline_s,
        linger_ms=settings.kafka_linger_ms,
    )
    own_tracing = (
        setup_tracing(
            service="wsched-api",
            endpoint=settings.otlp_endpoint,
            sample_ratio=settings.trace_sample_ratio,
        )
        if tracing is None
        else Tracing()  # off: the caller's is used, and flushed by the caller
    )
    the_tracing = tracing or own_tracing
    the_producer = producer or own_producer
    ctx = ApiContext(
        settings=settings,
        limits=limits,
        store=store,
        producer=(
            TracedProducer(the_producer, tracing=the_tracing)
            if the_tracing.enabled
            else the_producer
        ),
        admin=admin
        or KafkaTopicAdmin(
            bootstrap=settings.kafka_bootstrap or "",
            replication_factor=settings.kafka_replication_factor,
        ),
        deployer=the_deployer,
        metrics=metrics,
        quotas=QuotaGuard(
            defaults=default_quotas(settings),
            max_request_bytes=limits.max_request_bytes,
            store=store,
            clock=time.monotonic,
        ),
        events=events or make_event_source(settings),
        live=LiveHub(observe_lag=lambda at_ms: metrics.event_lag.observe(_since(at_ms))),
        charts=chart_allow_list(settings) if settings.deployer == "helm" else None,
    )
    if settings.kafka_bootstrap:
        ctx.revocations = KafkaRevocations(
            bootstrap=settings.kafka_bootstrap,
            admin=KafkaTopicAdmin(
                bootstrap=settings.kafka_bootstrap,
                replication_factor=settings.kafka_replication_factor,
            ),
            producer=own_producer,
        )
    metrics.waiters.set_function(lambda: ctx.live.waiting)
    reconciler = Reconciler(
        store=ctx.store,
        admin=ctx.admin,
        deployer=ctx.deployer,
        producer=ctx.producer,
        limits=limits,
        metrics=ctx.metrics,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.callback(engine.dispose)
            # In a thread: the last export is a blocking call that may take its timeout.
            stack.push_async_callback(asyncio.to_thread, own_tracing.shutdown)
            if producer is None or isinstance(ctx.revocations, KafkaRevocations):
                # Also when a producer is given: revocations are sent with this one.
                await stack.enter_async_context(own_producer)
            if own_deployer and isinstance(the_deployer, local.LocalDeployer):
                # Entered before the reconciler, left after it: no deploy is under way
                # when the workers are stopped.
                await stack.enter_async_context(the_deployer)
            await stack.enter_async_context(reconciler.running())
            # The process's one reader of the events topic, and of wsched.revocations:
            # what it remembers of a tenant whose keys changed is forgotten at once.
            readers = (
                (ctx.live.run(ctx.events), "events reader"),
                (ctx.revocations.follow(ctx.forget_tenant), "revocations reader"),
            )
            for work, name in readers:
                await stack.enter_async_context(in_background(work, name=name))
            ctx.nudge = reconciler.nudge
            ctx.nudge_tenant = reconciler.tenants.nudge
            yield

    app = FastAPI(
        title="Workload Scheduler",
        version="0.1.0",
        description=describe_limits(limits),
        lifespan=lifespan,
    )
    _declare_batch_bound(app, limits.max_batch_items)
    app.state.ctx = ctx
    app.state.reconciler = reconciler
    errors.install(app)
    app.add_middleware(
        BodyLimit, max_bytes=limits.max_request_bytes, max_depth=limits.max_json_depth
    )
    # Added later is outer: the caller is known (FairShare) before an early refusal
    # looks it up, and the refusal is counted (with no route: "unmatched").
    app.add_middleware(EarlyRefusal, guard=ctx.quotas)
    app.add_middleware(RequestMetrics, metrics=ctx.metrics)
    app.add_middleware(FairShare)
    app.add_middleware(DashboardHeaders)
    for module in (
        tenants,
        applications,
        pipelines,
        submits,
        tasks,
        bulk,
        schedules,
        live,
        dashboard,
    ):
        app.include_router(module.router)
    app.include_router(tenants.own)
    fast_submit.install(app)
    # The dashboard's script, styles and images, shipped in the package: no build step.
    app.mount("/ui/static", StaticFiles(directory=dashboard.STATIC), name="ui-static")
    _health_routes(app, settings=settings, engine=engine, registry=registry)
    if the_tracing.enabled:
        trace_requests(app, tracing=the_tracing)
    return app


def _declare_batch_bound(app: FastAPI, max_items: int) -> None:
    """State the batch bound in force in the OpenAPI (a setting, so not in the model)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # cached by FastAPI as app.openapi_schema
        document["components"]["schemas"]["SubmitBatch"]["properties"]["tasks"]["maxItems"] = (
            max_items
        )
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def _health_routes(
    app: FastAPI, *, settings: Settings, engine: sa.Engine, registry: CollectorRegistry
) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={
            503: {
                "description": "Not ready: the checks say which component is not",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def readyz(response: Response) -> dict[str, object]:
        """Readiness: red while Kafka or the database cannot be reached."""
        kafka, database = await asyncio.gather(
            check_kafka(settings.kafka_bootstrap),
            asyncio.to_thread(check_database, engine),
        )
        checks = [kafka, database]
        ready = all(check.ok for check in checks)
        response.status_code = 200 if ready else 503
        return {
            "status": "ready" if ready else "not ready",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus' text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
