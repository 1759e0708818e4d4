"""A submit by a tenant whose bucket this process knows to be empty is refused before its
body is read or its key looked up; nothing else is."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from services.api.fair_pool import CALLER, FairShare
from services.api.quotas import EarlyRefusal, QuotaGuard
from services.quotas import MemoryBuckets, Quotas, SubmitLimiter
from services.store.control import Tenant, utcnow

QUOTAS = Quotas(
    max_pipelines=None, max_backlog=None, submit_rate=1.0, submit_burst=1, max_request_bytes=None
)
KEY = {"Authorization": "Bearer wsk_a"}


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def guard(clock: Clock) -> QuotaGuard:
    made = QuotaGuard(defaults=QUOTAS, max_request_bytes=1 << 20, store=None, clock=clock)  # type: ignore[arg-type]
    made.limiter = SubmitLimiter(shared=MemoryBuckets(), clock=clock, wall=clock)
    return made


def client(guard: QuotaGuard, reached: list[str]) -> httpx.AsyncClient:
    """The middlewares in the app's order around an app that remembers every caller
    (as ``require_tenant`` does) and notes each request that reached it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        guard.remember_caller(CALLER.get(), Tenant(id="ta", name="a", created_at=utcnow()))
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    stack = FairShare(EarlyRefusal(app, guard=guard))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack), base_url="http://api")


async def test_an_empty_bucket_refuses_the_tenants_submits_before_the_app(
    guard: QuotaGuard, clock: Clock
) -> None:
    reached: list[str] = []
    async with client(guard, reached) as http:
        path = "/api/applications/a/pipelines/p"
        assert (await http.post(path, json={}, headers=KEY)).status_code == 202
        assert await guard.limiter.acquire("ta", QUOTAS, 1) == 0.0
        assert await guard.limiter.acquire("ta", QUOTAS, 1) > 0  # now known empty
        for route in (path, f"{path}/tasks"):
            refused = await http.post(route, json={}, headers=KEY)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "rate_limited"
            assert "submit_rate" in refused.json()["detail"]
            assert int(refused.headers["Retry-After"]) >= 1
        # Reads, other routes and other credentials go through.
        assert (await http.get(f"{path}/tasks", headers=KEY)).status_code == 202
        assert (await http.post(f"{path}/tasks:cancel", json={}, headers=KEY)).status_code == 202
        other = {"Authorization": "Bearer wsk_b"}
        assert (await http.post(path, json={}, headers=other)).status_code == 202
        clock.now += 1.5
        assert (await http.post(path, json={}, headers=KEY)).status_code == 202
    assert reached.count(path) == 3
    assert f"{path}/tasks" in reached and f"{path}/tasks:cancel" in reached


async def test_an_unknown_caller_is_never_refused_early(guard: QuotaGuard) -> None:
    assert guard.refusal(12345) is None
