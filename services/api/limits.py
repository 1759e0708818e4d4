"""Bounds and timings of the HTTP API, with their defaults.

The configurable ones come from the process's ``WSCHED_*`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.settings import Settings


@dataclass(frozen=True, kw_only=True)
class Limits:
    #: Bytes of one task's data (the JSON object as sent).
    max_task_data_bytes: int = 256 * 1024
    #: Bytes of one request body, checked from Content-Length and while reading.
    max_request_bytes: int = 64 * 1024 * 1024
    #: Arrays and objects nested in one request body (``{"a": [1]}`` is 2), checked on the
    #: raw bytes before parsing: the parser recurses per level, and a few thousand levels
    #: exhaust its stack. Task data needs far fewer.
    max_json_depth: int = 32
    max_batch_items: int = 10_000
    #: How far ahead a task's ``run_at`` or ``delay`` may reach.
    max_schedule_horizon_s: float = 365 * 86400
    #: How long a produce may wait for the broker's acknowledgement before a 503.
    produce_deadline_s: float = 5.0
    #: Seconds a client is told to wait (Retry-After) after a 503.
    retry_after_s: int = 5
    default_page_size: int = 100
    max_page_size: int = 1000
    #: How often the reconciler looks for pipelines left half-provisioned or half-deleted.
    reconcile_interval_s: float = 30.0
    #: Attempts at a deploy (or a pipeline's topic) before the failure is recorded, and
    #: the first pause, doubled after each attempt: 2 + 4 + 8 + 16 s, so a cluster or a
    #: broker away for half a minute does not fail a pipeline.
    reconcile_attempts: int = 5
    reconcile_backoff_s: float = 2.0
    #: How often the deployer is asked whether ready pipelines' workers are still in place
    #: (and at start).
    drift_check_s: float = 300.0
    #: How old a remembered tenant or pipeline may be to serve submits while the database
    #: is unreachable (Kafka absorbs submissions meanwhile).
    stale_lookup_s: float = 600.0
    #: How long a tenant or pipeline read for one request answers the next ones without
    #: a read (0: read every time). A key revoked or a tenant deleted is forgotten at once
    #: on every API process (``wsched.revocations``); a pipeline changed through this
    #: process at once, through another within this time.
    lookup_cache_s: float = 2.0
    #: The longest ``?wait=`` on a task (a longer one is a 422): held connections past a
    #: minute meet most proxies' idle timeouts.
    max_wait_s: float = 60.0
    #: How long an event stream stays open unless the client asks for less, and the most
    #: it may ask for; the client reconnects with Last-Event-ID, which also spreads
    #: streams over API processes again after a deploy.
    default_stream_s: float = 300.0
    max_stream_s: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_task_data_bytes=settings.max_task_data_bytes,
            max_request_bytes=settings.max_request_bytes,
            max_batch_items=settings.max_batch_items,
            max_schedule_horizon_s=settings.max_schedule_horizon_s,
            produce_deadline_s=settings.produce_deadline_s,
            retry_after_s=settings.retry_after_s,
            reconcile_interval_s=settings.reconcile_interval_s,
            drift_check_s=settings.drift_check_s,
            stale_lookup_s=settings.stale_lookup_s,
            lookup_cache_s=settings.lookup_cache_s,
        )
