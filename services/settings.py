"""Process settings: one object per process, read from ``WSCHED_*`` environment variables."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.deploy.chart_urls import parse_location
from services.deploy.postrender import CLUSTER_SCOPED, DEFAULT_KINDS
from services.infra.cache import default_cache_dir
from services.placement import TopicMode
from services.store.tokens import check_key, derive_key


class Settings(BaseSettings):
    """Everything a scheduler, API or dev process is configured with.

    ``kafka_bootstrap`` unset means "start an embedded broker" in ``wsched dev`` and
    "not configured" elsewhere; ``database_url`` unset means SQLite under ``data_dir``.
    """

    # Errors name the variable but never echo its value: some values are secrets.
    # An empty variable counts as unset (compose's `${WSCHED_SECRET_KEY:-}` when unset).
    model_config = SettingsConfigDict(
        env_prefix="WSCHED_", extra="ignore", hide_input_in_errors=True, env_ignore_empty=True
    )

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    #: The scheduler replica's /metrics, /healthz and /readyz; 0 turns the endpoint off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    #: The address workers are redirected to for the grains this replica owns.
    grpc_advertise: str | None = None
    #: A stable name per scheduler replica (the pod name): its static group membership.
    replica_name: str | None = None
    #: The consumer group of the scheduler replicas over the placement topic.
    placement_group: str = "wsched.scheduler"
    #: How long a scheduler's stop may take (the grains' last flushes, leaving the group)
    #: before it exits anyway, as a crash would: with Kafka or TiDB away the stop could
    #: otherwise wait for ever. Keep it under the pod's termination grace period (30 s).
    shutdown_timeout_s: float = Field(default=25.0, gt=0, le=600)
    #: Ready tasks each pipeline grain keeps in memory; the rest stays in the store.
    window_tasks: int = Field(default=2000, ge=10, le=1_000_000)
    #: How long a task admitted into the window may live in memory only (design D2): one
    #: that ends sooner is written once, at its end. 0: every task is written at admission.
    #: A task is not visible to GET before its first write.
    write_delay_ms: int = Field(default=500, ge=0, le=60_000)
    #: How long a pipeline's grain has nothing to do (no task ready, leased or due, no
    #: schedule) before it deactivates; the next record or report activates it. 0: never.
    grain_idle_timeout_s: float = Field(default=120.0, ge=0, le=86_400)
    #: Grain activations a scheduler replica runs at once (each claims its grain and
    #: reads its state); the others wait their turn. Bounds the herd when a replica takes
    #: over thousands of pipelines or one task reaches each of thousands at once.
    grain_activations: int = Field(default=64, ge=1, le=1024)
    #: A grain resting with timers or schedules is woken this long before the soonest
    #: (and its pipeline's ``scaling.lead_s``): room for the once-a-second scan of the
    #: wake-up index and for its activation to wait its turn in a herd (10,000 grains
    #: woken at one moment take about 40 s on two cores).
    grain_wake_margin_s: float = Field(default=60.0, ge=1, le=3600)
    kafka_bootstrap: str | None = None
    #: How long the API's producer waits for more records before it sends a batch. 0:
    #: records sent at once still batch while a request is in flight (measured: the same
    #: throughput as 5 ms, and a lone client's single submits 30 % faster).
    kafka_linger_ms: int = Field(default=0, ge=0, le=1000)
    database_url: str | None = None
    operator_key: SecretStr = SecretStr("dev-operator-key")
    #: Encrypts the worker tokens kept for deployers (a Fernet key). Unset, it is derived
    #: from the operator key: fine in development; change both outside development.
    secret_key: SecretStr | None = None
    #: How long a dashboard sign-in lasts (the session cookie is refused after that).
    ui_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)
    #: Mark the dashboard's session cookie ``Secure``; unset: when the request came over
    #: HTTPS (behind a TLS proxy, set it true, or run uvicorn with proxy headers).
    ui_secure_cookie: bool | None = None
    #: Who runs a pipeline's workers: ``noop`` (nobody: bring your own workers),
    #: ``local`` (the API runs them as processes on its machine, as ``wsched dev`` does:
    #: for development only, since every tenant's commands then run on that machine) or
    #: ``helm`` (each pipeline's chart is a Helm release in its tenant's namespace).
    deployer: str = Field(default="noop", pattern="^(noop|local|helm)$")

    # -- Kubernetes: the Helm deployer (API) and the built-in scaler (scheduler) ----------
    #: The kubeconfig to use; unset means the in-cluster service account, else
    #: ``$KUBECONFIG`` or ``~/.kube/config``.
    kubeconfig: Path | None = None
    kube_context: str | None = None
    #: The helm executable (a name on ``PATH`` or a path).
    helm_executable: str = "helm"
    #: How long one ``helm upgrade --install`` may take.
    helm_timeout_s: int = Field(default=300, ge=10, le=3600)
    #: The scheduler's gRPC address deployed workers poll (the scheduler chart's Service);
    #: unset means this process's advertised gRPC address.
    workers_scheduler: str | None = None
    #: The image deployed agents run, ``repository:tag`` (the chart's ``image``), e.g. a
    #: mirror of the wsched image in a private registry; unset keeps each chart's own.
    worker_image: str | None = Field(default=None, pattern=r"^\S+$")
    #: Give deployed workers this process's ``otlp_endpoint`` and ``log_format``: their
    #: agents then export their spans (attempts, steps, reports) to the same collector and
    #: log in the same format. Off: each chart's own (no spans, text logs). The tenants'
    #: NetworkPolicy must let the workers reach the collector (``tenant_extra_egress``).
    workers_observability: bool = False
    #: Who sets the replicas of pipeline Deployments: ``none`` (the chart's
    #: ``scaling.min_replicas``, or KEDA when a pipeline enables it) or ``builtin`` (the
    #: scheduler replica owning a pipeline scales its Deployment on its backlog). The API
    #: and the scheduler must agree: the chart leaves ``replicas`` to the scaler.
    autoscaler: str = Field(default="none", pattern="^(none|builtin)$")
    #: How often the built-in scaler looks at each owned pipeline.
    scaler_interval_s: float = Field(default=5.0, gt=0, le=600)

    # -- Tenant containment (the Helm deployer; README "Security model") -----------------
    #: Local chart directories tenants may name (relative to the API's working
    #: directory, compared by real path): by default the bundled examples and the
    #: library chart they depend on.
    chart_roots: list[Path] = Field(
        default_factory=lambda: [Path("charts/examples"), Path("charts/pipeline-lib")]
    )
    #: Chart repositories and registries tenants may name, as URL prefixes matched on
    #: scheme, host and whole path segments (``https://charts.example.com/stable``,
    #: ``oci://registry.example.com/pipelines``); none by default.
    chart_repositories: list[str] = Field(default_factory=list)
    #: The kinds a tenant's chart may render, ``group/Kind`` (``Kind`` in the core group).
    tenant_kinds: list[str] = Field(default_factory=lambda: list(DEFAULT_KINDS))
    #: The Pod Security Admission level enforced in tenant namespaces, and per tenant
    #: name a different one (only the operator, who sets these variables, can change it).
    tenant_pod_security: Literal["restricted", "baseline", "privileged"] = "restricted"
    tenant_pod_security_overrides: dict[str, Literal["restricted", "baseline", "privileged"]] = (
        Field(default_factory=dict)
    )
    #: The ServiceAccount helm acts as in each tenant namespace, and the ClusterRole
    #: (the scheduler chart's tenant role) bound to it there.
    tenant_service_account: str = Field(default="wsched-tenant", pattern=r"^[a-z0-9][a-z0-9.-]*$")
    tenant_cluster_role: str = Field(default="wsched-tenant", min_length=1)
    #: Each tenant namespace's ResourceQuota (``spec.hard``; empty: none).
    tenant_quota: dict[str, str] = Field(
        default_factory=lambda: {
            "pods": "50",
            "requests.cpu": "8",
            "requests.memory": "16Gi",
            "limits.cpu": "16",
            "limits.memory": "32Gi",
        }
    )
    #: Each tenant namespace's LimitRange: a container's default limits and requests.
    tenant_default_limits: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "1Gi"}
    )
    tenant_default_requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi"}
    )
    #: A NetworkPolicy in each tenant namespace: no ingress; egress to the scheduler's
    #: gRPC port and DNS only.
    tenant_network_policy: bool = True
    #: Where the scheduler's pods run and their labels, for that NetworkPolicy (unset
    #: namespace: the scheduler pods so labelled in any namespace).
    scheduler_namespace: str | None = None
    scheduler_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/part-of": "workload-scheduler",
            "app.kubernetes.io/component": "scheduler",
        }
    )
    #: The namespace of the cluster's DNS service, which tenants' pods may query.
    dns_namespace: str = "kube-system"
    #: NetworkPolicy egress rules added for every tenant namespace (JSON, as the
    #: Kubernetes API takes them), e.g. ``[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
    #: "ports": [{"port": 443}]}]`` for pipelines that fetch from the internet.
    tenant_extra_egress: list[dict[str, Any]] = Field(default_factory=list)
    data_dir: Path = Path(".wsched")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    #: ``auto`` runs Apache Kafka when Java and Maven are present, else the pip-installed
    #: memory-only broker; ``kafka`` or ``memory`` force one.
    dev_broker: str = Field(default="auto", pattern="^(auto|kafka|memory)$")
    dev_kafka_port: int = Field(default=19092, ge=1, le=65535)
    log_level: str = "INFO"
    #: ``text`` lines, or ``json``: one object a line with the task, pipeline and trace
    #: ids where known (README "Observability").
    log_format: Literal["text", "json"] = "text"
    #: A log line per HTTP request answered (uvicorn's access log). Off by default: at a
    #: thousand single submits a second it was a twentieth of the API's CPU, and the
    #: request metrics (by route and status) and traces say what it would.
    access_log: bool = False
    #: Where traces go, an OTLP/gRPC endpoint (``http://collector:4317``); unset: no
    #: spans are made at all.
    otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    #: The share of tasks traced (a task's spans follow the decision at its submit).
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    # -- HTTP API bounds and timings ------------------------------------------------------
    max_task_data_bytes: int = Field(default=256 * 1024, ge=1)
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=10_000, ge=1)
    #: How far ahead a task's run_at or delay may reach (default one year).
    max_schedule_horizon_s: float = Field(default=365 * 86400, gt=0)
    #: How long a submit waits for the broker's acknowledgement before answering 503.
    produce_deadline_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    #: How often the API checks that ready pipelines' workers (Helm releases, local
    #: processes) are still in place, and deploys again those that are not.
    drift_check_s: float = Field(default=300.0, gt=0)
    #: How old a remembered tenant or pipeline may be to accept submits while the
    #: database is unreachable (Kafka absorbs the submissions meanwhile).
    stale_lookup_s: float = Field(default=600.0, ge=0)
    #: How long a tenant or pipeline read for one request answers the next ones without a
    #: database read (0: read every time). Revoked keys and deleted tenants are forgotten
    #: at once on every API process; other changes hold within this time.
    lookup_cache_s: float = Field(default=2.0, ge=0, le=60)
    # -- Tenants' quotas: the operator's defaults; 0 is unbounded. Per tenant, the operator
    # overrides them with PATCH /api/tenants/{name} (README "Quotas and fair use").
    #: Live pipelines per tenant.
    quota_max_pipelines: int = Field(default=100, ge=0)
    #: Tasks queued or scheduled over a tenant's pipelines (checked against the counters
    #: the grains flush every 2 s, so it may be overshot by about 3 s of submits).
    quota_max_backlog: int = Field(default=2_000_000, ge=0)
    #: Tasks a tenant may submit per second over all API processes (each task of a batch
    #: counts), and the bucket they refill: the largest burst, and the largest batch.
    quota_submit_rate: float = Field(default=20_000.0, ge=0)
    quota_submit_burst: int = Field(default=40_000, ge=0)
    #: Bytes of one request body of a tenant; 0: the process's WSCHED_MAX_REQUEST_BYTES
    #: (which also bounds every override).
    quota_max_request_bytes: int = Field(default=0, ge=0)
    #: Replication factor of new topics; unset means min(3, brokers in the cluster).
    kafka_replication_factor: int | None = Field(default=None, ge=1)
    #: Where a pipeline created without ``topic`` (nor more than one partition) puts its
    #: records: ``shared`` (its shard's partition of ``wsched.shared``, design D3: 10,000
    #: pipelines open 64 partitions) or ``dedicated`` (a topic of its own).
    pipeline_topic: TopicMode = TopicMode.SHARED

    @field_validator("pipeline_topic", mode="before")
    @classmethod
    def _topic_mode(cls, value: object) -> object:
        # The enum's own error would not name the variable an operator sets.
        if isinstance(value, str) and value not in {mode.value for mode in TopicMode}:
            raise ValueError("WSCHED_PIPELINE_TOPIC must be 'dedicated' or 'shared'")
        return value

    @field_validator("secret_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_key(value.get_secret_value())
        return value

    @field_validator("chart_repositories")
    @classmethod
    def _plain_locations(cls, value: list[str]) -> list[str]:
        # Errors never echo a value (a URL may carry credentials): the entry's position.
        for index, url in enumerate(value):
            try:
                parse_location(url)
            except ValueError as err:
                raise ValueError(f"entry {index}: {err}") from None
        return value

    @field_validator("tenant_kinds")
    @classmethod
    def _namespaced_kinds(cls, value: list[str]) -> list[str]:
        scoped = sorted(set(value) & CLUSTER_SCOPED)
        if scoped:
            raise ValueError(f"cluster-scoped kinds cannot be a tenant's: {', '.join(scoped)}")
        return value

    def effective_secret_key(self) -> bytes:
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        return derive_key(self.operator_key.get_secret_value())

    def workers_scheduler_address(self) -> str:
        return self.workers_scheduler or self.advertised_grpc()

    def workers_scheduler_port(self) -> int:
        """The gRPC port workers dial (for the tenants' NetworkPolicy)."""
        port = self.workers_scheduler_address().rpartition(":")[2]
        return int(port) if port.isdigit() else self.grpc_port

    def advertised_grpc(self) -> str:
        return self.grpc_advertise or f"{self.grpc_host}:{self.grpc_port}"

    def effective_replica_name(self) -> str:
        return self.replica_name or f"{socket.gethostname()}-{self.grpc_port}"

    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'wsched.db').resolve()}"
