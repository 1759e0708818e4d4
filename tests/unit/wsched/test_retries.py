"""503 and 429 are retried, honouring Retry-After, a bounded number of times, and only
for requests that are safe to repeat."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging

import httpx
import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, error
from wsched.client._retry import parse_retry_after


def client(api: FakeApi, clock: Clock, **options: object) -> wsched.Client:
    return wsched.Client(
        "http://api",
        api_key="k",
        transport=api.transport(),
        sleep=clock.sleep,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def busy(retry_after: str | None = "3") -> httpx.Response:
    return error(503, "broker_unavailable", "retry later", retry_after)


def test_a_read_waits_what_retry_after_asks_then_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeApi().then(busy("3"), error(429, "rate_limited", "slow down", "1"))
    api.then(answer(200, {"applications": []}))
    clock = Clock()
    with caplog.at_level(logging.WARNING, "wsched.client"), client(api, clock) as sdk:
        assert sdk.applications.list() == []
    assert clock.slept == [3.0, 1.0]
    assert len(api.requests) == 3
    # No silent retries: one line each.
    assert [r.getMessage() for r in caplog.records] == [
        "GET /api/applications answered 503; try 2 again in 3.0 s",
        "GET /api/applications answered 429; try 3 again in 1.0 s",
    ]


def test_retries_are_bounded_and_the_last_answer_is_raised() -> None:
    api = FakeApi().then(*[busy("2") for _ in range(3)])
    clock = Clock()
    retry = wsched.RequestRetry(attempts=3)
    with client(api, clock, retry=retry) as sdk, pytest.raises(wsched.Unavailable) as raised:
        sdk.applications.list()
    assert len(api.requests) == 3 and clock.slept == [2.0, 2.0]
    assert raised.value.error == "broker_unavailable"
    assert raised.value.retry_after_s == 2.0


def test_a_long_retry_after_is_capped_and_a_missing_one_backs_off() -> None:
    api = FakeApi().then(busy("3600"), busy(None), busy(None), answer(200, {"tenants": []}))
    clock = Clock()
    retry = wsched.RequestRetry(attempts=4, first_delay_s=0.5, max_delay_s=10)
    with client(api, clock, retry=retry) as sdk:
        assert sdk.tenants.list() == []
    assert clock.slept == [10.0, 1.0, 2.0]


def test_a_create_is_not_repeated_after_a_503() -> None:
    """It may have taken effect: sent again, it would answer 409 name_taken."""
    api = FakeApi().then(busy())
    clock = Clock()
    with client(api, clock) as sdk, pytest.raises(wsched.Unavailable):
        sdk.applications.create("shop")
    assert len(api.requests) == 1 and clock.slept == []


def test_retries_can_be_turned_off() -> None:
    api = FakeApi().then(busy())
    with (
        client(api, Clock(), retry=wsched.RequestRetry(attempts=1)) as sdk,
        pytest.raises(wsched.Unavailable),
    ):
        sdk.applications.list()
    with pytest.raises(ValueError, match="1 or more"):
        wsched.RequestRetry(attempts=0)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now) == 7.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
