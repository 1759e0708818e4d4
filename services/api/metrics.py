"""The API's Prometheus metrics, registered in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._deployment_status: dict[str, str] = {}
        self.deploys = Counter(
            "wsched_deploys",
            "Deploys of pipelines' workers by this API replica's reconciler: deployed, "
            "failed (the chart or its values were refused) or error (helm or the cluster "
            "unreachable; retried).",
            ["result"],
            registry=registry,
        )
        self.deploy_seconds = Histogram(
            "wsched_deploy_duration_seconds",
            "Time one deploy of a pipeline's workers took (helm upgrade --install ...).",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.deployment = Gauge(
            "wsched_pipeline_deployment_revision",
            "The revision of each pipeline's deployment, labelled with its status "
            "(deployed, failed), as this API replica's reconciler last recorded it.",
            ["pipeline", "status"],
            registry=registry,
        )
        self.tasks_created = Counter(
            "wsched_tasks_created",
            "Tasks accepted by the API: produced and acknowledged by Kafka.",
            ["pipeline"],
            registry=registry,
        )
        self.requests = Counter(
            "wsched_api_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "wsched_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=registry,
        )
        self.broker_unavailable = Counter(
            "wsched_api_broker_unavailable",
            "Produces that Kafka did not acknowledge within the deadline (answered 503).",
            registry=registry,
        )
        self.waiters = Gauge(
            "wsched_api_waiters",
            "Requests waiting for a task to end (``?wait=``) in this API process.",
            registry=registry,
        )
        self.wait_lag = Histogram(
            "wsched_api_wait_lag_seconds",
            "From a task's end committed by its grain (its event's time) to the answer of a "
            "waiter the event woke: the cost of live results over reading the row.",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=registry,
        )
        self.event_lag = Histogram(
            "wsched_api_event_lag_seconds",
            "From a grain's commit (its event's time) to the event's arrival in this API "
            "process, for the pipelines it has waiters or live streams for (the others' "
            "events are skipped undecoded): the events topic's share of a waiter's wait.",
            buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=registry,
        )
        self.stale_lookups = Counter(
            "wsched_api_stale_lookups",
            "Tenants or pipelines served from memory because the database was unreachable.",
            registry=registry,
        )

    def deployment_recorded(self, pipeline: str, status: str, revision: int) -> None:
        previous = self._deployment_status.get(pipeline)
        if previous is not None and previous != status:
            self.deployment.remove(pipeline, previous)
        self.deployment.labels(pipeline, status).set(revision)
        self._deployment_status[pipeline] = status

    def deployment_forgotten(self, pipeline: str) -> None:
        previous = self._deployment_status.pop(pipeline, None)
        if previous is not None:
            self.deployment.remove(pipeline, previous)
