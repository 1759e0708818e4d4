"""A handle waits for its task by reading it with a growing pause, up to a deadline."""

from __future__ import annotations

import pytest

import wsched
from tests.unit.wsched.fakes import Clock, FakeApi, answer, error, task_json


def submitted(api: FakeApi, clock: Clock) -> tuple[wsched.Client, wsched.TaskHandle]:
    sdk = wsched.Client(
        "http://api", api_key="k", transport=api.transport(), sleep=clock.sleep, clock=clock
    )
    return sdk, sdk.tasks("shop", "echo").handle("a")


def test_result_waits_through_not_admitted_and_queued_then_answers() -> None:
    api = FakeApi().then(
        error(404, "not_found", "no task 'a' in pipeline 'echo'"),
        answer(200, task_json("a", "queued")),
        answer(200, task_json("a", "leased")),
        answer(200, task_json("a", "succeeded", result={"ok": 1}, result_encoding="json")),
    )
    clock = Clock()
    sdk, handle = submitted(api, clock)
    with sdk:
        assert handle.result(timeout=30) == {"ok": 1}
    assert clock.slept == [0.1, 0.2, 0.4]


def test_a_task_that_ended_otherwise_raises_with_its_final_state() -> None:
    api = FakeApi().then(answer(200, task_json("a", "dead", error="exit 1")))
    sdk, handle = submitted(api, Clock())
    with sdk, pytest.raises(wsched.TaskFailed) as raised:
        handle.result(timeout=5)
    assert raised.value.task.status == "dead" and "exit 1" in str(raised.value)


def test_wait_returns_a_finished_task_whatever_its_outcome() -> None:
    api = FakeApi().then(answer(200, task_json("a", "cancelled")))
    sdk, handle = submitted(api, Clock())
    with sdk:
        assert handle.wait().status == "cancelled"


def test_a_timeout_says_what_was_last_seen_and_never_overshoots() -> None:
    api = FakeApi().then(*[answer(200, task_json("a", "queued"))] * 20)
    clock = Clock()
    sdk, handle = submitted(api, clock)
    with sdk, pytest.raises(wsched.TaskTimeout) as raised:
        handle.result(timeout=10)
    assert "last seen queued" in str(raised.value)
    assert sum(clock.slept) == pytest.approx(10.0)
    assert max(clock.slept) == 2.0  # the pause stops growing
    assert isinstance(raised.value, TimeoutError)


def test_another_error_while_waiting_is_raised() -> None:
    api = FakeApi().then(error(401, "unauthorized", "unknown key"))
    sdk, handle = submitted(api, Clock())
    with sdk, pytest.raises(wsched.Unauthorized):
        handle.wait(timeout=5)


def test_a_long_poll_strategy_plugs_in_without_changing_the_loop() -> None:
    class LongPoll:
        def params(self, remaining_s: float) -> dict[str, str]:
            return {"wait": f"{min(remaining_s, 30):g}s"}

        def pause_s(self, reads: int, remaining_s: float) -> float:
            return 0.0

    api = FakeApi().then(
        answer(200, task_json("a", "queued")), answer(200, task_json("a", "succeeded"))
    )
    clock = Clock()
    with wsched.Client(
        "http://api",
        api_key="k",
        transport=api.transport(),
        sleep=clock.sleep,
        clock=clock,
        wait=LongPoll(),
    ) as sdk:
        sdk.tasks("shop", "echo").handle("a").wait(timeout=45)
    assert [r.url.params["wait"] for r in api.requests] == ["30s", "30s"]
