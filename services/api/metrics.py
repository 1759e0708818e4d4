"""The API's Prometheus metrics, registered in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ApiMetrics:
    def __init__(self, *, registry: CollectorRegistry) -> None:
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
        self.stale_lookups = Counter(
            "wsched_api_stale_lookups",
            "Tenants or pipelines served from memory because the database was unreachable.",
            registry=registry,
        )
