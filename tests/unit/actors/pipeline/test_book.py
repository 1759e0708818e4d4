"""The grain's state machine: window, leases, epochs, reports, cancels, dead-lettering."""

from __future__ import annotations

import datetime as dt

import pytest

from actors.pipeline.book import TaskBook
from actors.pipeline.model import (
    Grant,
    InvalidToken,
    LeaseToken,
    Outcome,
    PipelineConfig,
    Report,
    ReportAck,
    Status,
    Task,
    Verdict,
)
from actors.pipeline.retry import Backoff, RetryOverride

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def task(i: int, *, data: bytes = b"{}", due: dt.datetime = T0) -> Task:
    """A task as the store admits it: scheduled when it is due after T0, else queued."""
    status = Status.SCHEDULED if due > T0 else Status.QUEUED
    return Task(id=f"t{i:04d}", attempt=1, status=status, data=data, due_at=due, created_at=T0)


def book(**config: int | float) -> TaskBook:
    return TaskBook(config=PipelineConfig(pipeline_id="p", **config), epoch=7)  # type: ignore[arg-type]


def test_token_round_trips_and_rejects_garbage() -> None:
    token = LeaseToken(task_id="a.b.c", attempt=2, epoch=9)
    assert LeaseToken.decode(token.encode()) == token
    for bad in ("", "1.2", "x.1.a", "1.y.a", "1.2."):
        with pytest.raises(InvalidToken):
            LeaseToken.decode(bad)


def test_admitted_tasks_are_leased_in_order_with_the_grain_epoch() -> None:
    b = book()
    b.admit([task(i) for i in range(5)])
    grants = b.lease(worker="w1", max_tasks=3, max_bytes=1 << 20, now=0, wall=T0)
    assert [g.task.id for g in grants] == ["t0000", "t0001", "t0002"]
    assert all(g.token.epoch == 7 and g.token.attempt == 1 for g in grants)
    assert grants[0].task.status is Status.LEASED and grants[0].task.worker == "w1"
    assert b.stats()["queued"] == 2 and b.stats()["leased"] == 3
    assert b.totals["dispatched"] == 3


def test_byte_bound_limits_a_poll_but_always_grants_one() -> None:
    b = book()
    b.admit([task(i, data=b"x" * 100) for i in range(3)])
    assert len(b.lease(worker="w", max_tasks=10, max_bytes=50, now=0, wall=T0)) == 1
    assert len(b.lease(worker="w", max_tasks=10, max_bytes=250, now=0, wall=T0)) == 2


def test_tasks_not_yet_due_wait_in_the_timers_not_the_window() -> None:
    b = book()
    b.timers.refill([], limit=1)  # the store holds no older timers
    b.admit([task(1, due=T0 + dt.timedelta(minutes=5)), task(2)])
    assert b.ready_count == 1 and "t0001" in b.timers
    assert b.stats()["scheduled"] == 1 and b.stats()["backlog"] == 1
    assert [
        g.task.id for g in b.lease(worker="w", max_tasks=5, max_bytes=1 << 20, now=0, wall=T0)
    ] == ["t0002"]


def test_two_thousand_future_tasks_never_hold_back_a_ready_one() -> None:
    b = book(window_tasks=100)
    b.timers.refill([], limit=1)
    b.admit([task(i, due=T0 + dt.timedelta(seconds=i + 1)) for i in range(2000)])
    b.admit([task(5000)])
    grants = b.lease(worker="w", max_tasks=5, max_bytes=1 << 20, now=0, wall=T0)
    assert [g.task.id for g in grants] == ["t5000"]
    assert b.stats()["scheduled"] == 2000 and len(b.timers) == 2000


def test_due_timers_fire_into_the_window_as_room_allows() -> None:
    b = book(window_tasks=2)
    b.timers.refill([], limit=1)
    b.admit([task(i, due=T0 + dt.timedelta(seconds=1)) for i in range(3)])
    assert b.take_due(wall=T0) == []
    due = b.take_due(wall=T0 + dt.timedelta(seconds=1))
    assert [key[1] for key, _ in due] == ["t0000", "t0001"]  # the window holds two
    assert all(held is not None and held.id == key[1] for key, held in due)  # kept in memory
    b.fired([(key, held) for key, held in due if held])
    assert b.ready_count == 2 and b.stats()["scheduled"] == 1 and b.stats()["queued"] == 2
    assert b.take_due(wall=T0 + dt.timedelta(seconds=9)) == []  # the window is full
    assert b.totals["fired"] == 2


def test_cancelling_a_timer_leaves_its_row_to_the_store() -> None:
    b = book()
    b.timers.refill([], limit=1)
    b.admit([task(1, due=T0 + dt.timedelta(minutes=5))])
    assert b.cancel(["t0001"], wall=T0) == ["t0001"]
    assert "t0001" not in b.timers
    b.cancelled_in_store({Status.SCHEDULED: 1})
    assert b.stats()["scheduled"] == 0 and b.stats()["cancelled"] == 1


def test_window_is_bounded_and_the_rest_stays_in_the_store() -> None:
    b = book(window_tasks=4)
    b.admit([task(i) for i in range(10)])
    assert b.ready_count == 4 and b.stored_backlog == 6 and b.stats()["backlog"] == 10
    b.lease(worker="w", max_tasks=3, max_bytes=1 << 20, now=0, wall=T0)
    assert b.wants_page()
    b.page_in([task(i) for i in range(3, 8)], exhausted=False)  # t0003 is already held
    assert b.ready_count == 4 and b.stored_backlog == 3 and b.page_after == "t0007"


def test_a_full_pass_that_finds_nothing_resets_the_backlog_estimate() -> None:
    b = book(window_tasks=2)
    b.load_counts({Status.QUEUED: 5})
    b.page_in([], exhausted=True)
    assert b.stored_backlog == 0 and not b.wants_page()


def test_report_success_then_a_repeat_is_a_duplicate_and_an_old_token_is_stale() -> None:
    b = book()
    b.admit([task(1)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    ok = Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"42")
    assert b.report(ok, wall=T0) is ReportAck.ACCEPTED
    assert b.report(ok, wall=T0) is ReportAck.DUPLICATE
    other = LeaseToken(task_id="t0001", attempt=1, epoch=6)
    assert b.report(Report(token=other, outcome=Outcome.FAILED), wall=T0) is ReportAck.STALE
    flush = b.take_flush()
    assert flush.results == (("t0001", 1, b"42"),)
    (change,) = flush.changes
    assert change.status is Status.SUCCEEDED and change.expire_at is not None
    assert b.stats()["succeeded"] == 1 and b.stats()["leased"] == 0


def test_expired_lease_requeues_with_the_next_attempt_then_goes_dead() -> None:
    b = book(max_attempts=2, lease_timeout_s=10)
    b.timers.refill([], limit=1)
    b.admit([task(1)])
    (first,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    assert b.heartbeat([first.token], now=8) == [Verdict.OK]  # extends to 18
    assert b.expire(now=15, wall=T0) == []
    assert len(b.expire(now=18, wall=T0)) == 1
    assert b.totals["retried"] == 1 and b.stats()["scheduled"] == 1
    # the next attempt waits out the backoff (about 1 s), then fires from the store
    assert b.take_due(wall=T0) == []
    ((key, again),) = b.take_due(wall=T0 + dt.timedelta(seconds=2))
    assert again is not None and again.attempt == 2  # the retry fires from memory
    b.fired([(key, again)])
    (second,) = b.lease(worker="w2", max_tasks=1, max_bytes=1 << 20, now=20, wall=T0)
    assert second.token.attempt == 2 and second.token != first.token
    # the first worker's late report does not touch the second attempt
    late = Report(token=first.token, outcome=Outcome.SUCCEEDED)
    assert b.report(late, wall=T0) is ReportAck.STALE
    assert b.heartbeat([first.token], now=21) == [Verdict.LEASE_LOST]
    b.expire(now=31, wall=T0)
    assert b.stats()["dead"] == 1 and b.stats()["queued"] == 0
    assert b.take_flush().changes[0].status is Status.DEAD


def test_cancel_a_queued_task_and_a_leased_one() -> None:
    b = book()
    b.admit([task(1), task(2)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    assert b.cancel(["t0001", "t0002", "t9999"], wall=T0) == ["t9999"]
    assert b.stats()["cancelled"] == 1  # the queued one
    assert b.heartbeat([grant.token], now=1) == [Verdict.CANCELLED]
    failed = Report(token=grant.token, outcome=Outcome.FAILED, error="killed")
    assert b.report(failed, wall=T0) is ReportAck.ACCEPTED
    assert b.stats()["cancelled"] == 2 and b.stats()["leased"] == 0


def test_failed_flush_is_restored_without_overwriting_newer_changes() -> None:
    b = book()
    b.admit([task(1)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    flush = b.take_flush()
    assert not b.dirty
    b.report(Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"r"), wall=T0)
    b.restore_flush(flush)
    again = b.take_flush()
    assert [c.status for c in again.changes] == [Status.SUCCEEDED]


def test_takeover_gives_loaded_leases_a_fresh_timeout_and_accepts_their_tokens() -> None:
    b = book(lease_timeout_s=30)
    leased = task(1)
    leased.status, leased.lease_epoch, leased.worker = Status.LEASED, 6, "w"
    b.load_counts({Status.LEASED: 1})
    b.restore_leases([leased], now=100)
    old_token = LeaseToken(task_id="t0001", attempt=1, epoch=6)
    assert b.heartbeat([old_token], now=120) == [Verdict.OK]
    assert b.expire(now=140, wall=T0) == []
    report = Report(token=old_token, outcome=Outcome.SUCCEEDED)
    assert b.report(report, wall=T0) is ReportAck.ACCEPTED


# -- retries ---------------------------------------------------------------------------------

NO_JITTER = Backoff(initial_s=10, multiplier=2, max_s=300, jitter=0)


def retrying_book(**config: object) -> TaskBook:
    b = TaskBook(config=PipelineConfig(pipeline_id="p", backoff=NO_JITTER, **config), epoch=7)  # type: ignore[arg-type]
    b.timers.refill([], limit=1)
    return b


def leased(b: TaskBook, i: int = 1) -> Grant:
    b.admit([task(i)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    return grant


def test_a_reported_failure_is_retried_after_the_backoff_as_a_timer() -> None:
    b = retrying_book()
    grant = leased(b)
    failure = Report(token=grant.token, outcome=Outcome.FAILED, error="boom")
    assert b.report(failure, wall=T0) is ReportAck.ACCEPTED
    assert b.report(failure, wall=T0) is ReportAck.DUPLICATE
    flush = b.take_flush()
    (change,) = flush.changes
    (history,) = flush.attempts
    assert (history.task_id, history.attempt, history.worker) == ("t0001", 1, "w")
    assert (history.outcome, history.error, history.ended_at) == ("failed", "boom", T0)
    assert history.started_at == T0
    assert (change.status, change.attempt, change.error) == (Status.SCHEDULED, 2, "boom")
    assert change.due_at == T0 + dt.timedelta(seconds=10) and change.worker is None
    assert "t0001" in b.timers and b.stats()["scheduled"] == 1 and b.stats()["leased"] == 0
    assert b.totals["retried"] == 1
    assert b.take_flush().attempts == ()  # the history went with the first flush
    assert b.take_due(wall=T0 + dt.timedelta(seconds=9)) == []
    ((key, held),) = b.take_due(wall=T0 + dt.timedelta(seconds=10))
    assert key == (change.due_at, "t0001") and held is not None and held.attempt == 2


def test_the_pause_grows_and_the_last_failure_is_dead_with_its_error() -> None:
    b = retrying_book(max_attempts=3)
    b.admit([task(1)])
    wall = T0
    for attempt, pause in ((1, 10), (2, 20)):
        (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=wall)
        assert grant.token.attempt == attempt
        b.report(Report(token=grant.token, outcome=Outcome.FAILED, error="boom"), wall=wall)
        (change,) = b.take_flush().changes
        assert change.due_at == wall + dt.timedelta(seconds=pause)
        wall = change.due_at
        ((key, refreshed),) = b.take_due(wall=wall)
        assert refreshed is not None and refreshed.attempt == attempt + 1
        b.fired([(key, refreshed)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=wall)
    b.report(Report(token=grant.token, outcome=Outcome.FAILED, error="boom"), wall=wall)
    (change,) = b.take_flush().changes
    assert change.status is Status.DEAD and change.error == "attempt 3 of 3: boom"
    assert b.stats()["dead"] == 1 and b.stats()["scheduled"] == 0


def test_a_non_retryable_failure_ends_the_task_at_once() -> None:
    b = retrying_book()
    grant = leased(b)
    final = Report(token=grant.token, outcome=Outcome.FAILED, error="bad input", non_retryable=True)
    b.report(final, wall=T0)
    (change,) = b.take_flush().changes
    assert (change.status, change.attempt, change.error) == (Status.FAILED, 1, "bad input")
    assert "t0001" not in b.timers


def test_a_lost_lease_waits_out_the_backoff_too() -> None:
    b = retrying_book(lease_timeout_s=5)
    leased(b)
    b.expire(now=6, wall=T0)
    flush = b.take_flush()
    (change,) = flush.changes
    assert [a.outcome for a in flush.attempts] == ["lease_lost"]
    assert change.status is Status.SCHEDULED and change.attempt == 2
    assert change.due_at == T0 + dt.timedelta(seconds=10)
    assert "lease expired on attempt 1" in (change.error or "")


def test_a_retry_beyond_the_horizon_holds_refills_until_it_is_written() -> None:
    b = retrying_book(timer_heap=2)
    b.admit([task(i, due=T0 + dt.timedelta(seconds=i)) for i in (1, 2, 3)])  # the heap: t1, t2
    grant = leased(b, 9)
    b.report(Report(token=grant.token, outcome=Outcome.FAILED), wall=T0)  # due at +10 s
    assert "t0009" not in b.timers and b.has_unwritten_timers
    flush = b.take_flush()
    assert not b.has_unwritten_timers
    b.restore_flush(flush)  # the write failed: the timer is unwritten again
    assert b.has_unwritten_timers


# -- deadlines -------------------------------------------------------------------------------


def with_deadline(i: int, seconds: float) -> Task:
    task_ = task(i)
    task_.expires_at = T0 + dt.timedelta(seconds=seconds)
    return task_


def test_a_task_past_its_deadline_is_never_handed_out() -> None:
    b = book()
    b.admit([with_deadline(1, 5), task(2)])
    later = T0 + dt.timedelta(seconds=5)
    grants = b.lease(worker="w", max_tasks=5, max_bytes=1 << 20, now=0, wall=later)
    assert [g.task.id for g in grants] == ["t0002"]
    (change, _) = b.take_flush().changes
    assert change.status is Status.EXPIRED and "deadline" in (change.error or "")
    assert b.stats()["expired"] == 1 and b.totals["expired"] == 1


def test_the_sweep_ends_overdue_ready_tasks_without_a_poll() -> None:
    b = book()
    b.admit([with_deadline(1, 5), with_deadline(2, 50), task(3)])
    assert b.end_overdue(wall=T0 + dt.timedelta(seconds=4)) == 0
    assert b.end_overdue(wall=T0 + dt.timedelta(seconds=5)) == 1
    assert b.ready_count == 2 and b.stats()["queued"] == 2 and b.stats()["expired"] == 1


def test_a_retry_that_could_not_start_before_the_deadline_ends_expired() -> None:
    b = retrying_book()  # the first pause is 10 s
    b.admit([with_deadline(1, 8)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    b.report(Report(token=grant.token, outcome=Outcome.FAILED, error="boom"), wall=T0)
    (change,) = b.take_flush().changes
    assert change.status is Status.EXPIRED and (change.error or "").startswith("boom")
    assert "t0001" not in b.timers and b.stats()["expired"] == 1


def test_a_cancel_of_a_retry_not_yet_written_ends_it_in_memory() -> None:
    b = retrying_book()
    grant = leased(b)
    b.report(Report(token=grant.token, outcome=Outcome.FAILED, error="boom"), wall=T0)
    assert b.cancel(["t0001"], wall=T0) == []  # not for the store: its row says leased
    (change,) = b.take_flush().changes
    assert change.status is Status.CANCELLED and change.expire_at is not None
    assert "t0001" not in b.timers and not b.has_unwritten_timers
    assert b.stats()["scheduled"] == 0 and b.stats()["cancelled"] == 1


def test_a_tasks_own_policy_wins_over_its_pipelines() -> None:
    b = retrying_book(max_attempts=5)  # the pipeline: 5 attempts, 10 s first pause
    own = task(1)
    own.retry = RetryOverride(max_attempts=1)
    quick = task(2)
    quick.retry = RetryOverride(backoff=Backoff(initial_s=2, jitter=0))
    b.admit([own, quick])
    first, second = b.lease(worker="w", max_tasks=2, max_bytes=1 << 20, now=0, wall=T0)
    for grant in (first, second):
        b.report(Report(token=grant.token, outcome=Outcome.FAILED, error="x"), wall=T0)
    changes = {c.id: c for c in b.take_flush().changes}
    assert changes["t0001"].status is Status.DEAD  # its own single attempt
    assert changes["t0002"].status is Status.SCHEDULED
    assert changes["t0002"].due_at == T0 + dt.timedelta(seconds=2)  # its own backoff


# -- execution timeouts and purges -------------------------------------------------------------


def test_a_grant_carries_the_tasks_timeout_else_the_pipelines() -> None:
    b = book(execution_timeout_s=30.0)
    own = task(1)
    own.execution_timeout_s = 5.0
    b.admit([own, task(2)])
    grants = b.lease(worker="w", max_tasks=2, max_bytes=1 << 20, now=0, wall=T0)
    assert [g.execution_timeout_s for g in grants] == [5.0, 30.0]
    plain = book()
    plain.admit([task(3)])
    (grant,) = plain.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    assert grant.execution_timeout_s is None  # the workers decide


def test_a_timed_out_attempt_is_retried_then_dead_and_kept_as_timed_out() -> None:
    b = book(max_attempts=2)
    b.admit([task(1)])
    (grant,) = b.lease(worker="w", max_tasks=1, max_bytes=1 << 20, now=0, wall=T0)
    error = "step 1 (sh), command 1 timed out after 2 s (execution_timeout)"
    b.report(
        Report(token=grant.token, outcome=Outcome.FAILED, error=error, timed_out=True), wall=T0
    )
    flush = b.take_flush()
    (change,) = flush.changes
    assert change.status is Status.SCHEDULED and change.attempt == 2
    (attempt,) = flush.attempts
    assert attempt.outcome == "timed_out" and attempt.error == error


def test_purged_dead_tasks_leave_the_counts() -> None:
    b = book()
    b.counts[Status.DEAD] = 5
    b.purged_from_store(3)
    assert b.stats()["dead"] == 2 and b.totals["purged"] == 3
