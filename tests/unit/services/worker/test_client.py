"""The worker's gRPC client against in-process servers: redirects with calls in flight.

Found by the chaos soak (``services/chaos``): a bench worker with two poll loops on one
client died of ``CancelledError`` when one loop followed a redirect, because the client
closed the old channel at once and cancelled the other loop's poll still running on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from protos.wsched.v1 import worker_pb2, worker_pb2_grpc
from services.worker.client import OWNER_KEY, SchedulerClient


class _Replica(worker_pb2_grpc.WorkerServicer):
    """Polls are held for ``hold_s``; reports are redirected to ``owner`` when it is set."""

    def __init__(self, *, hold_s: float = 0.0, owner: str = "") -> None:
        self.hold_s, self.owner = hold_s, owner
        self.reports = 0

    async def Poll(
        self, request: worker_pb2.PollRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.PollResponse:
        await asyncio.sleep(self.hold_s)
        return worker_pb2.PollResponse()

    async def Report(
        self, request: worker_pb2.ReportRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.ReportResponse:
        if self.owner:
            context.set_trailing_metadata(((OWNER_KEY, self.owner),))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not the owner")
        self.reports += 1
        return worker_pb2.ReportResponse()

    async def Heartbeat(
        self, request: worker_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> worker_pb2.HeartbeatResponse:
        return worker_pb2.HeartbeatResponse()


async def _serve(servicer: _Replica) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[_Replica, str, _Replica, str]]:
    owner = _Replica()
    owner_server, owner_address = await _serve(owner)
    other = _Replica(hold_s=0.5, owner=owner_address)
    other_server, other_address = await _serve(other)
    yield other, other_address, owner, owner_address
    await other_server.stop(None)
    await owner_server.stop(None)


async def test_a_redirect_does_not_cancel_a_call_in_flight_on_the_old_channel(
    replicas: tuple[_Replica, str, _Replica, str],
) -> None:
    _, other_address, owner, owner_address = replicas
    client = SchedulerClient(addresses=[other_address], pipeline_id="p", token="t", worker="w")
    try:
        polling = asyncio.create_task(client.poll(max_tasks=1, wait_ms=500))
        await asyncio.sleep(0.1)  # the poll is held on the first replica
        await client.report([worker_pb2.TaskResult(lease_token="1.1.x")])  # redirected

        await asyncio.wait_for(polling, 5)  # not cancelled by the switch of channel

        assert client.target == owner_address and owner.reports == 1
    finally:
        await client.close()
