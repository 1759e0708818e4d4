"""A worker token opens its own pipeline only, on every RPC of the worker API.

Tokens are minted by the control store and checked by the scheduler's own
``PipelineDirectory`` (SQLite), as in production; only the grain is a recorder. ``RPCS``
must name every method of ``wsched.v1.Worker``, so an RPC added later joins the matrix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from actors.pipeline.model import Grant, LeaseToken, Report, ReportAck, Verdict
from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.scheduler.directory import PipelineDirectory
from services.scheduler.worker_api import Limits, LocalGrain, WorkerService
from services.store import migrate
from services.store.control import ControlStore, PipelineSpec
from services.store.tokens import TokenCipher, derive_key

LEASE = LeaseToken(task_id="ta-1", attempt=1, epoch=1).encode()


@dataclass(kw_only=True)
class RecordingGrain:
    lease_timeout_s: float = 30.0
    calls: list[str] = field(default_factory=list)

    async def poll(
        self, *, worker: str, max_tasks: int, max_bytes: int, wait_s: float
    ) -> list[Grant]:
        self.calls.append("poll")
        return []

    async def heartbeat(self, tokens: Sequence[LeaseToken]) -> list[Verdict]:
        self.calls.append("heartbeat")
        return [Verdict.OK for _ in tokens]

    async def report(self, reports: Sequence[Report]) -> list[ReportAck]:
        self.calls.append("report")
        return [ReportAck.ACCEPTED for _ in reports]


@dataclass(kw_only=True)
class Directory:
    """The real token check; every pipeline's grain is the recorder, and asking for it
    (which activates a grain in production) is recorded too."""

    tokens: PipelineDirectory
    grain: RecordingGrain
    activated: list[str] = field(default_factory=list)

    async def authenticate(self, pipeline_id: str, token: str) -> bool:
        return await self.tokens.authenticate(pipeline_id, token)

    async def local(self, pipeline_id: str) -> LocalGrain | None:
        self.activated.append(pipeline_id)
        return self.grain

    async def owner_address(self, pipeline_id: str) -> str | None:
        return None


@dataclass(frozen=True, kw_only=True)
class Pipelines:
    """Two tenants' pipelines: id -> worker token."""

    a_id: str
    a_token: str
    b_id: str
    b_token: str


def two_tenants(engine: sa.Engine) -> Pipelines:
    store = ControlStore(engine=engine, cipher=TokenCipher(key=derive_key("test")))
    made = []
    for name in ("alpha", "beta"):
        tenant, _ = store.create_tenant(f"t-{name}")
        app = store.create_application(tenant_id=tenant.id, name=name)
        made.append(
            store.create_pipeline(app=app, spec=PipelineSpec(name="p", chart="./charts/noop"))
        )
    (a, a_token), (b, b_token) = made
    return Pipelines(a_id=a.id, a_token=a_token, b_id=b.id, b_token=b_token)


@dataclass(kw_only=True)
class Served:
    worker: worker_pb2_grpc.WorkerStub
    directory: Directory
    pipelines: Pipelines


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'wsched.db'}")
    migrate.upgrade(engine)
    directory = Directory(
        tokens=PipelineDirectory(engine=engine, window_tasks=10), grain=RecordingGrain()
    )
    server = grpc.aio.server()
    service = WorkerService(directory=directory, address="here", limits=Limits())
    worker_pb2_grpc.add_WorkerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(
                worker=worker_pb2_grpc.WorkerStub(channel),
                directory=directory,
                pipelines=two_tenants(engine),
            )
    finally:
        await server.stop(None)
        engine.dispose()


Rpc = Callable[[worker_pb2_grpc.WorkerStub, str, Any], Awaitable[Any]]

#: Each RPC with a pipeline id and metadata, carrying a lease of that pipeline's task.
RPCS: dict[str, Rpc] = {
    "Poll": lambda w, pid, md: w.Poll(
        worker_pb2.PollRequest(pipeline_id=pid, worker="w1", wait_ms=0), metadata=md
    ),
    "Heartbeat": lambda w, pid, md: w.Heartbeat(
        worker_pb2.HeartbeatRequest(pipeline_id=pid, worker="w1", lease_tokens=[LEASE]),
        metadata=md,
    ),
    "Report": lambda w, pid, md: w.Report(
        worker_pb2.ReportRequest(
            pipeline_id=pid,
            worker="w1",
            results=[
                worker_pb2.TaskResult(lease_token=LEASE, outcome=worker_pb2.OUTCOME_SUCCEEDED)
            ],
        ),
        metadata=md,
    ),
}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_the_table_covers_every_rpc() -> None:
    service = worker_pb2.DESCRIPTOR.services_by_name["Worker"]
    assert set(RPCS) == {method.name for method in service.methods}


@pytest.mark.parametrize("rpc", list(RPCS))
async def test_another_pipelines_token_is_unauthenticated_before_the_grain(
    served: Served, rpc: str
) -> None:
    p = served.pipelines
    wrong = {
        "B's token on A's pipeline": (p.a_id, bearer(p.b_token)),
        "A's token on B's pipeline": (p.b_id, bearer(p.a_token)),
        "no token": (p.a_id, ()),
    }
    for case, (pipeline_id, metadata) in wrong.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await RPCS[rpc](served.worker, pipeline_id, metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
    assert served.directory.grain.calls == []
    assert served.directory.activated == []

    # The control: the same call with the pipeline's own token reaches its grain.
    await RPCS[rpc](served.worker, p.a_id, bearer(p.a_token))
    assert served.directory.grain.calls == [rpc.lower()]
    assert served.directory.activated == [p.a_id]
