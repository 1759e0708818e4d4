"""What every ``TaskStore`` does: fencing, idempotent admission, paging, flushing, cancels.

A test module subclasses :class:`TaskStoreContract` and provides an ``under_test``
fixture: an empty store, and a way to read back the rows it holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from actors.pipeline.book import TaskBook
from actors.pipeline.book_flush import Flush
from actors.pipeline.model import (
    GrainKey,
    NewTask,
    Outcome,
    PipelineConfig,
    Purge,
    Report,
    Status,
    Task,
    TaskChange,
)
from actors.pipeline.ports import Admission, StaleEpoch, TaskStore
from actors.pipeline.retry import Backoff, RetryOverride
from actors.pipeline.schedules import ScheduleState, run_id

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
PIPELINE = "0190-pipeline"
GRAIN = GrainKey(pipeline_id=PIPELINE)


@dataclass(frozen=True, kw_only=True)
class StoredTask:
    """A task row as the store holds it, in the columns both stores keep."""

    status: str
    attempt: int
    error: str | None
    worker: str | None
    lease_epoch: int | None
    finished: bool
    data: bytes


class StoreUnderTest(Protocol):
    @property
    def store(self) -> TaskStore: ...

    async def tasks(self) -> dict[str, StoredTask]:
        """Every task row, by id."""
        ...

    async def results(self) -> list[tuple[str, bytes]]:
        """Every stored result as (task id, result), by task id."""
        ...

    async def attempts(self) -> list[tuple[str, int, str, str | None]]:
        """Every kept attempt as (task id, attempt, outcome, error), in that order."""
        ...

    async def define_schedule(self, *, schedule_id: str, version: int, doc: dict[str, Any]) -> None:
        """Write a schedule definition of ``PIPELINE`` as the API would."""
        ...

    async def wake_ups(self) -> dict[GrainKey, dt.datetime]:
        """The wake-up index: every resting grain, and when it must be active again."""
        ...


def new(i: int, data: bytes = b'{"n":1}', *, due_in_s: float = 0) -> NewTask:
    return NewTask(
        id=f"task-{i:05d}",
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=NOW + dt.timedelta(seconds=due_in_s),
        created_at=NOW,
    )


def dead(task_id: str, *, attempt: int) -> Flush:
    """A flush that leaves the task dead after its last attempt, as lease expiry would."""
    change = TaskChange(
        id=task_id,
        attempt=attempt,
        status=Status.DEAD,
        started_at=NOW,
        finished_at=NOW,
        worker="w1",
        error="lease expired",
        lease_epoch=1,
        expire_at=None,
        due_at=NOW,
    )
    return Flush(changes=(change,), results=())


def stored(row: Any) -> StoredTask:
    """A row of either store (a SQL row, an in-memory ``Task``) in the columns compared."""
    return StoredTask(
        status=str(row.status),
        attempt=row.attempt,
        error=row.error,
        worker=row.worker,
        lease_epoch=row.lease_epoch,
        finished=row.finished_at is not None,
        data=row.data,
    )


async def claim_and_admit(
    store: TaskStore, *tasks: NewTask, grain: GrainKey = GRAIN, offsets: Mapping[int, int] = {}
) -> tuple[int, Admission]:
    """Claim the grain (a new epoch) and admit ``tasks`` at it."""
    epoch = await store.claim(grain=grain, owner="a")
    admission = await store.admit(grain=grain, epoch=epoch, tasks=tasks, offsets=offsets, now=NOW)
    return epoch, admission


async def kill(store: TaskStore, epoch: int, task_id: str) -> None:
    """Leave the task dead after its third attempt, through a flush."""
    await store.flush(grain=GRAIN, epoch=epoch, flush=dead(task_id, attempt=3), stats={}, now=NOW)


async def statuses(under_test: StoreUnderTest) -> dict[str, str]:
    return {task_id: row.status for task_id, row in (await under_test.tasks()).items()}


class TaskStoreContract:
    async def test_claim_increments_the_epoch_and_fences_the_old_owner(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        first = await store.claim(grain=GRAIN, owner="replica-a")
        second = await store.claim(grain=GRAIN, owner="replica-b")
        assert second == first + 1
        with pytest.raises(StaleEpoch):
            await store.admit(grain=GRAIN, epoch=first, tasks=[new(1)], offsets={0: 1}, now=NOW)
        assert await store.page_queued(grain=GRAIN, after="", limit=10) == []

    async def test_every_write_of_an_old_epoch_is_refused(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        old, _ = await claim_and_admit(store, new(1))
        await store.claim(grain=GRAIN, owner="b")
        ids = ["task-00001"]
        with pytest.raises(StaleEpoch):
            await store.cancel_waiting(
                grain=GRAIN, epoch=old, task_ids=ids, now=NOW, retention_s=60
            )
        with pytest.raises(StaleEpoch):
            await store.fire_timers(grain=GRAIN, epoch=old, timers=[(NOW, "task-00001")], now=NOW)
        with pytest.raises(StaleEpoch):
            await store.requeue_dead(grain=GRAIN, epoch=old, task_ids=ids, now=NOW)
        with pytest.raises(StaleEpoch):
            await store.flush(
                grain=GRAIN, epoch=old, flush=dead("task-00001", attempt=3), stats={}, now=NOW
            )
        assert await statuses(under_test) == {"task-00001": "queued"}

    async def test_admissions_at_once_are_each_fenced_by_their_own_grain(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        grains = [GrainKey(pipeline_id=f"0190-admit-{i}") for i in range(4)]
        epochs = [await store.claim(grain=grain, owner="a") for grain in grains]
        await store.claim(grain=grains[2], owner="b")  # the third moved away
        outcomes = await asyncio.gather(
            *(
                store.admit(grain=g, epoch=e, tasks=[new(i)], offsets={0: i + 1}, now=NOW)
                for i, (g, e) in enumerate(zip(grains, epochs, strict=True))
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[2], StaleEpoch)
        for i in (0, 1, 3):
            admission = outcomes[i]
            assert isinstance(admission, Admission)
            assert [t.id for t in admission.admitted] == [new(i).id]
            loaded = await store.load(grain=grains[i])
            assert (loaded.counts, loaded.offsets) == ({Status.QUEUED: 1}, {0: i + 1})
        assert (await store.load(grain=grains[2])).counts == {}

    async def test_admit_is_idempotent_and_reports_conflicts(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, first = await claim_and_admit(store, new(1), new(2), new(1), offsets={0: 3})
        assert [t.id for t in first.admitted] == ["task-00001", "task-00002"]
        again = await store.admit(
            grain=GRAIN,
            epoch=epoch,
            tasks=[new(1), new(2, b'{"n":2}'), new(3)],
            offsets={0: 6},
            now=NOW,
        )
        assert [t.id for t in again.admitted] == ["task-00003"]
        assert again.duplicates == ["task-00001"] and again.conflicts == ["task-00002"]
        loaded = await store.load(grain=GRAIN)
        assert loaded.offsets == {0: 6} and loaded.counts == {Status.QUEUED: 3}

    async def test_a_resubmit_inside_one_batch_is_dropped_not_counted(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        _, admission = await claim_and_admit(store, new(1), new(1), new(1, b"{}"))
        assert [t.id for t in admission.admitted] == ["task-00001"]
        assert admission.duplicates == [] and admission.conflicts == []
        assert (await under_test.tasks())["task-00001"].data == b'{"n":1}'  # the first stands

    async def test_offsets_are_kept_per_grain(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        other = GrainKey(pipeline_id=PIPELINE, slice=1)
        for grain, offset in ((GRAIN, 5), (other, 9)):
            await claim_and_admit(store, grain=grain, offsets={0: offset})
        assert (await store.load(grain=GRAIN)).offsets == {0: 5}
        assert (await store.load(grain=other)).offsets == {0: 9}

    async def test_page_queued_walks_ids_in_order(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        await claim_and_admit(store, *(new(i) for i in range(7)))
        page = await store.page_queued(grain=GRAIN, after="", limit=4)
        rest = await store.page_queued(grain=GRAIN, after=page[-1].id, limit=4)
        assert [t.id for t in page + rest] == [f"task-{i:05d}" for i in range(7)]
        assert page[0].data == b'{"n":1}' and page[0].due_at == NOW

    async def test_flush_writes_leases_results_and_counters_then_reload(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, admission = await claim_and_admit(store, new(1), new(2))
        book = TaskBook(config=PipelineConfig(pipeline_id=PIPELINE), epoch=epoch)
        book.admit(admission.admitted)
        done, running = book.lease(worker="w1", max_tasks=2, max_bytes=1 << 20, now=0, wall=NOW)
        book.report(Report(token=done.token, outcome=Outcome.SUCCEEDED, result=b"ok"), wall=NOW)
        await store.flush(
            grain=GRAIN, epoch=epoch, flush=book.take_flush(), stats=book.stats(), now=NOW
        )
        rows = await under_test.tasks()
        assert await statuses(under_test) == {"task-00001": "succeeded", "task-00002": "leased"}
        assert await under_test.results() == [("task-00001", b"ok")]
        assert rows["task-00001"].data == b'{"n":1}'  # the upsert never overwrites the data
        # a new incarnation takes over the lease with the old token
        new_epoch = await store.claim(grain=GRAIN, owner="b")
        loaded = await store.load(grain=GRAIN)
        assert [t.id for t in loaded.leased] == ["task-00002"]
        assert loaded.leased[0].lease_epoch == epoch and new_epoch == epoch + 1
        with pytest.raises(StaleEpoch):
            await store.flush(
                grain=GRAIN, epoch=epoch, flush=book.take_flush(), stats=book.stats(), now=NOW
            )
        assert running.token.epoch == epoch

    async def test_cancel_queued_and_requeue_dead(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        epoch, _ = await claim_and_admit(store, new(1), new(2))
        cancelled = await store.cancel_waiting(
            grain=GRAIN, epoch=epoch, task_ids=["task-00001", "nope"], now=NOW, retention_s=60
        )
        assert cancelled == {Status.QUEUED: 1}
        row = (await under_test.tasks())["task-00001"]
        assert (row.status, row.error, row.finished) == ("cancelled", "cancelled", True)
        await kill(store, epoch, "task-00002")
        requeued = await store.requeue_dead(
            grain=GRAIN, epoch=epoch, task_ids=["task-00002", "task-00001"], now=NOW
        )
        assert [(t.id, t.attempt, t.status) for t in requeued] == [("task-00002", 1, Status.QUEUED)]

    async def test_purge_deletes_only_dead_tasks_that_died_before_the_cutoff(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, _ = await claim_and_admit(store, new(1), new(2), new(3))
        await kill(store, epoch, "task-00001")
        await kill(store, epoch, "task-00002")
        later = NOW + dt.timedelta(seconds=1)
        early = NOW - dt.timedelta(seconds=1)
        purges = [
            Purge(task_id="task-00001", finished_before=later),
            Purge(task_id="task-00002", finished_before=early),  # died after this cutoff
            Purge(task_id="task-00003", finished_before=later),  # queued, not dead
            Purge(task_id="nope", finished_before=later),
        ]
        gone = await store.purge_dead(grain=GRAIN, epoch=epoch, purges=purges, now=later)
        assert gone == 1
        assert await statuses(under_test) == {"task-00002": "dead", "task-00003": "queued"}
        again = await store.purge_dead(grain=GRAIN, epoch=epoch, purges=purges, now=later)
        assert again == 0  # a replayed purge is a no-op
        newer = await store.claim(grain=GRAIN, owner="b")
        with pytest.raises(StaleEpoch):
            await store.purge_dead(grain=GRAIN, epoch=epoch, purges=purges, now=later)
        assert newer == epoch + 1

    async def test_a_tasks_execution_timeout_is_kept_with_it(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        timed = dataclasses.replace(
            new(1), execution_timeout_s=2.5, retry=RetryOverride(max_attempts=2)
        )
        _epoch, admission = await claim_and_admit(store, timed, new(2))
        assert admission.admitted[0].execution_timeout_s == 2.5
        page = await store.page_queued(grain=GRAIN, after="", limit=10)
        assert [(t.execution_timeout_s, t.retry) for t in page] == [
            (2.5, RetryOverride(max_attempts=2)),
            (None, None),
        ]

    async def test_a_requeued_task_starts_afresh(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        epoch, _ = await claim_and_admit(store, new(1))
        await kill(store, epoch, "task-00001")
        await store.requeue_dead(grain=GRAIN, epoch=epoch, task_ids=["task-00001"], now=NOW)
        assert (await under_test.tasks())["task-00001"] == StoredTask(
            status="queued",
            attempt=1,
            error=None,
            worker=None,
            lease_epoch=None,
            finished=False,
            data=b'{"n":1}',
        )

    async def test_requeue_returns_only_the_rows_it_requeued(
        self, under_test: StoreUnderTest
    ) -> None:
        """A requeue replayed after a crash finds the task queued already: the grain must
        not count it out of ``dead`` a second time."""
        store = under_test.store
        epoch, _ = await claim_and_admit(store, new(1), new(2))
        await kill(store, epoch, "task-00002")
        requeued = await store.requeue_dead(
            grain=GRAIN, epoch=epoch, task_ids=["task-00001", "task-00002"], now=NOW
        )
        assert [t.id for t in requeued] == ["task-00002"]


class TimerContract:
    """Tasks not due yet: scheduled rows with timer rows, read in order, fired, cancelled."""

    async def test_a_task_due_later_is_scheduled_with_a_timer(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        _, admission = await claim_and_admit(store, new(1), new(2, due_in_s=60), new(3, due_in_s=5))
        assert {t.id: t.status for t in admission.admitted} == {
            "task-00001": Status.QUEUED,
            "task-00002": Status.SCHEDULED,
            "task-00003": Status.SCHEDULED,
        }
        assert [t.id for t in await store.page_queued(grain=GRAIN, after="", limit=10)] == [
            "task-00001"
        ]
        timers = await store.page_timers(grain=GRAIN, after=None, limit=10)
        assert timers == [(at(5), "task-00003"), (at(60), "task-00002")]
        assert await store.page_timers(grain=GRAIN, after=timers[0], limit=10) == timers[1:]
        assert await store.page_timers(grain=GRAIN, after=None, limit=1) == timers[:1]
        other = GrainKey(pipeline_id="0190-other")
        assert await store.page_timers(grain=other, after=None, limit=10) == []
        assert (await store.load(grain=GRAIN)).counts == {Status.QUEUED: 1, Status.SCHEDULED: 2}

    async def test_an_activation_claims_and_reads_state_and_first_timers_at_once(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, _ = await claim_and_admit(
            store, new(1), new(2, due_in_s=60), new(3, due_in_s=5), offsets={0: 3}
        )
        activation = await store.activate(grain=GRAIN, owner="b", timers=1)
        assert activation.epoch == epoch + 1  # the old owner is fenced
        assert activation.loaded.counts == {Status.QUEUED: 1, Status.SCHEDULED: 2}
        assert activation.loaded.offsets == {0: 3}
        assert activation.timers == [(at(5), "task-00003")]  # the first, as many as asked
        assert activation.schedules == []
        with pytest.raises(StaleEpoch):
            await store.admit(grain=GRAIN, epoch=epoch, tasks=[new(4)], offsets={}, now=NOW)
        fresh = await store.activate(grain=GrainKey(pipeline_id="0190-new"), owner="b", timers=5)
        assert (fresh.epoch, fresh.loaded.counts, fresh.timers) == (1, {}, [])

    async def test_activations_at_once_each_get_their_own_grain(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        grains = [GRAIN, *(GrainKey(pipeline_id=f"0190-many-{i}") for i in range(4))]
        epoch, _ = await claim_and_admit(store, new(1), new(2, due_in_s=30))
        read = await asyncio.gather(
            *(store.activate(grain=grain, owner="b", timers=10) for grain in grains)
        )
        assert read[0].epoch == epoch + 1
        assert read[0].loaded.counts == {Status.QUEUED: 1, Status.SCHEDULED: 1}
        assert read[0].timers == [(at(30), "task-00002")]
        assert all((r.epoch, r.loaded.counts, r.timers) == (1, {}, []) for r in read[1:])

    async def test_a_resting_grain_keeps_its_wake_up_until_its_next_claim(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch = await store.claim(grain=GRAIN, owner="a")
        wake_at = NOW + dt.timedelta(hours=1)
        await store.rest(grain=GRAIN, epoch=epoch, wake_at=wake_at)
        assert await under_test.wake_ups() == {GRAIN: wake_at}
        await store.activate(grain=GRAIN, owner="b", timers=10)
        assert await under_test.wake_ups() == {}
        with pytest.raises(StaleEpoch):  # an ex-owner resting late writes nothing
            await store.rest(grain=GRAIN, epoch=epoch, wake_at=wake_at)
        assert await under_test.wake_ups() == {}
        epoch = await store.claim(grain=GRAIN, owner="b")
        await store.rest(grain=GRAIN, epoch=epoch, wake_at=wake_at)
        await store.claim(grain=GRAIN, owner="c")
        assert await under_test.wake_ups() == {}

    async def test_grains_resting_at_once_are_each_fenced_by_their_own_grain(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        grains = [GrainKey(pipeline_id=f"0190-rest-{i}") for i in range(4)]
        epochs = [await store.claim(grain=grain, owner="a") for grain in grains]
        await store.claim(grain=grains[1], owner="b")  # the second moved away
        wake_ats = [NOW + dt.timedelta(minutes=i + 1) for i in range(4)]
        outcomes = await asyncio.gather(
            *(
                store.rest(grain=g, epoch=e, wake_at=w)
                for g, e, w in zip(grains, epochs, wake_ats, strict=True)
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], StaleEpoch)
        assert [outcomes[i] for i in (0, 2, 3)] == [None, None, None]
        assert await under_test.wake_ups() == {grains[i]: wake_ats[i] for i in (0, 2, 3)}

    async def test_firing_reads_the_task_and_its_next_state_ends_the_timer(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, admission = await claim_and_admit(store, new(1, due_in_s=5), new(2, due_in_s=6))
        key = (at(5), "task-00001")
        fired = await store.fire_timers(grain=GRAIN, epoch=epoch, timers=[key], now=at(5))
        assert [(t.id, t.status, t.data) for t in fired] == [
            ("task-00001", Status.QUEUED, b'{"n":1}')
        ]
        # A read: the row stays scheduled and the timer stays until the next state is flushed.
        assert await statuses(under_test) == {"task-00001": "scheduled", "task-00002": "scheduled"}
        assert len(await store.page_timers(grain=GRAIN, after=None, limit=10)) == 2
        book = TaskBook(config=PipelineConfig(pipeline_id=PIPELINE), epoch=epoch)
        book.timers.refill([], limit=1)
        book.admit(admission.admitted)
        book.fired([(key, fired[0])])
        book.lease(worker="w1", max_tasks=1, max_bytes=1 << 20, now=0, wall=at(5))
        flush = book.take_flush()
        await store.flush(grain=GRAIN, epoch=epoch, flush=flush, stats={}, now=at(5))
        assert await statuses(under_test) == {"task-00001": "leased", "task-00002": "scheduled"}
        assert await store.page_timers(grain=GRAIN, after=None, limit=10) == [(at(6), "task-00002")]
        # Fired again (a replay after a crash): the task is no longer scheduled, and a
        # stale timer row would be ended.
        again = await store.fire_timers(grain=GRAIN, epoch=epoch, timers=[key], now=at(6))
        assert again == []

    async def test_firings_at_once_are_each_fenced_and_read_for_their_own_grain(
        self, under_test: StoreUnderTest
    ) -> None:
        """Grains firing at one moment may share the store's work; each still gets only
        its own tasks (the same task id in two pipelines included), and a fenced one
        fails alone."""
        store = under_test.store
        grains = [GrainKey(pipeline_id=f"0190-fire-{i}") for i in range(4)]
        epochs = []
        for grain in grains:
            epoch = await store.claim(grain=grain, owner="a")
            await store.admit(
                grain=grain, epoch=epoch, tasks=[new(1, due_in_s=5)], offsets={}, now=NOW
            )
            epochs.append(epoch)
        await store.claim(grain=grains[2], owner="b")  # the third moved away
        key = (at(5), "task-00001")
        outcomes = await asyncio.gather(
            *(
                store.fire_timers(grain=g, epoch=e, timers=[key], now=at(5))
                for g, e in zip(grains, epochs, strict=True)
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[2], StaleEpoch)
        for i in (0, 1, 3):
            fired = outcomes[i]
            assert isinstance(fired, list)
            assert [(t.id, t.status) for t in fired] == [("task-00001", Status.QUEUED)]

    async def test_cancelling_a_scheduled_task_ends_its_timer(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        epoch, _ = await claim_and_admit(store, new(1, due_in_s=5), new(2))
        cancelled = await store.cancel_waiting(
            grain=GRAIN, epoch=epoch, task_ids=["task-00001", "task-00002"], now=NOW, retention_s=60
        )
        assert cancelled == {Status.SCHEDULED: 1, Status.QUEUED: 1}
        assert await store.page_timers(grain=GRAIN, after=None, limit=10) == []
        assert (
            await store.fire_timers(
                grain=GRAIN, epoch=epoch, timers=[(at(5), "task-00001")], now=at(5)
            )
            == []
        )
        assert await statuses(under_test) == {"task-00001": "cancelled", "task-00002": "cancelled"}


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


class AttemptsContract:
    """Attempts that did not end their task are kept as history, once each."""

    async def test_a_retry_keeps_the_failed_attempt(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        epoch, admission = await claim_and_admit(store, new(1))
        book = TaskBook(config=PipelineConfig(pipeline_id=PIPELINE), epoch=epoch)
        book.timers.refill([], limit=1)
        book.admit(admission.admitted)
        (grant,) = book.lease(worker="w1", max_tasks=1, max_bytes=1 << 20, now=0, wall=NOW)
        book.report(Report(token=grant.token, outcome=Outcome.FAILED, error="boom"), wall=NOW)
        flush = book.take_flush()
        await store.flush(grain=GRAIN, epoch=epoch, flush=flush, stats={}, now=NOW)
        await store.flush(grain=GRAIN, epoch=epoch, flush=flush, stats={}, now=NOW)  # replayed
        assert await under_test.attempts() == [("task-00001", 1, "failed", "boom")]
        assert await statuses(under_test) == {"task-00001": "scheduled"}
        (timer,) = await store.page_timers(grain=GRAIN, after=None, limit=10)
        assert timer[1] == "task-00001" and timer[0] > NOW


class RetryPolicyContract:
    """A task's own retry policy is kept with it and comes back when it is read."""

    async def test_a_tasks_own_policy_survives_the_store(self, under_test: StoreUnderTest) -> None:
        store = under_test.store
        own = RetryOverride(max_attempts=7, backoff=Backoff(initial_s=2, jitter=0))
        task = dataclasses.replace(new(1), retry=own)
        _, admission = await claim_and_admit(store, task, new(2))
        assert [t.retry for t in admission.admitted] == [own, None]
        page = await store.page_queued(grain=GRAIN, after="", limit=10)
        assert [(t.id, t.retry) for t in page] == [("task-00001", own), ("task-00002", None)]

    async def test_a_flush_inserts_a_held_task_whole_and_stores_its_offsets(
        self, under_test: StoreUnderTest
    ) -> None:
        """The write delay (D2): a task admitted without a row is inserted by the flush
        that writes its end, with its data, digest and own policy, and the offsets that
        waited for it go in the same transaction."""
        store = under_test.store
        own = RetryOverride(max_attempts=7, backoff=Backoff(initial_s=2, jitter=0))
        epoch, _ = await claim_and_admit(store, new(2))  # one task with a row already
        book = TaskBook(config=PipelineConfig(pipeline_id=PIPELINE, write_delay_s=5), epoch=epoch)
        held = dataclasses.replace(new(1, b'{"n":7}'), retry=own, execution_timeout_s=9.0)
        task = Task(
            id=held.id,
            attempt=1,
            status=Status.QUEUED,
            data=held.data,
            due_at=NOW,
            created_at=NOW,
            retry=own,
            execution_timeout_s=9.0,
            unwritten=True,
            data_sha256=held.data_sha256,
        )
        book.admit([task])
        book.hold([task], {0: 12}, now=0)
        assert await store.stored_digests(grain=GRAIN, task_ids=[held.id, "task-00002"]) == {
            "task-00002": new(2).data_sha256
        }
        (grant,) = book.lease(worker="w1", max_tasks=1, max_bytes=1 << 20, now=0, wall=NOW)
        book.report(Report(token=grant.token, outcome=Outcome.SUCCEEDED, result=b"r"), wall=NOW)
        flush = book.take_flush(now=1)
        assert flush.offsets == {0: 12}
        await store.flush(grain=GRAIN, epoch=epoch, flush=flush, stats=book.stats(), now=NOW)
        book.flushed(flush)
        rows = await under_test.tasks()
        assert (rows[held.id].status, rows[held.id].data) == ("succeeded", b'{"n":7}')
        assert await under_test.results() == [(held.id, b"r")]
        assert await store.stored_digests(grain=GRAIN, task_ids=[held.id]) == {
            held.id: held.data_sha256
        }
        assert (await store.load(grain=GRAIN)).offsets == {0: 12}
        assert not book.holding and not task.unwritten
        # its own policy went with the insert: a requeue after death keeps it
        await kill(store, epoch, held.id)
        (requeued,) = await store.requeue_dead(
            grain=GRAIN, epoch=epoch, task_ids=[held.id], now=NOW
        )
        assert (requeued.retry, requeued.execution_timeout_s) == (own, 9.0)


SCHEDULE_DOC: dict[str, Any] = {
    "every_s": 60.0,
    "timezone": "UTC",
    "data_json": '{"s":1}',
    "created_at": NOW.isoformat(),
}


def schedule_run(schedule_id: str, fire_at: dt.datetime) -> NewTask:
    data = b'{"s":1}'
    return NewTask(
        id=run_id(schedule_id, fire_at),
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=fire_at,
        created_at=NOW,
        schedule_id=schedule_id,
        fire_at=fire_at,
    )


class ScheduleContract:
    """A schedule's runs and its state are written together, fenced; runs keep their time."""

    async def test_runs_and_state_land_together_and_read_back(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        await under_test.define_schedule(schedule_id="sch-a", version=1, doc=SCHEDULE_DOC)
        assert await store.schedule_versions(grain=GRAIN) == {"sch-a": 1}
        (fresh,) = await store.load_schedules(grain=GRAIN)
        assert fresh.spec.id == "sch-a"
        assert fresh.state is None
        epoch = await store.claim(grain=GRAIN, owner="a")
        state = ScheduleState(schedule_id="sch-a", version=1, next_fire_at=NOW, fired=1)
        run = schedule_run("sch-a", NOW)
        admission = await store.admit(
            grain=GRAIN, epoch=epoch, tasks=[run], offsets={}, now=NOW, schedules=[state]
        )
        assert [(t.schedule_id, t.fire_at) for t in admission.admitted] == [("sch-a", NOW)]
        (loaded,) = await store.load_schedules(grain=GRAIN, ids=["sch-a", "gone"])
        assert loaded.state == state
        (page,) = await store.page_queued(grain=GRAIN, after="", limit=10)
        assert (page.id, page.schedule_id, page.fire_at) == (run.id, "sch-a", NOW)
        statuses = await store.run_statuses(grain=GRAIN, task_ids=[run.id, "none"])
        assert statuses == {run.id: Status.QUEUED}

    async def test_an_activation_reads_the_schedules_with_their_state(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        await under_test.define_schedule(schedule_id="sch-a", version=1, doc=SCHEDULE_DOC)
        (read,) = (await store.activate(grain=GRAIN, owner="a", timers=10)).schedules
        assert (read.spec.id, read.state) == ("sch-a", None)

    async def test_a_fenced_firing_writes_neither_run_nor_state(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        await under_test.define_schedule(schedule_id="sch-a", version=1, doc=SCHEDULE_DOC)
        old = await store.claim(grain=GRAIN, owner="a")
        await store.claim(grain=GRAIN, owner="b")
        state = ScheduleState(schedule_id="sch-a", version=1, next_fire_at=NOW, fired=1)
        with pytest.raises(StaleEpoch):
            await store.admit(
                grain=GRAIN,
                epoch=old,
                tasks=[schedule_run("sch-a", NOW)],
                offsets={},
                now=NOW,
                schedules=[state],
            )
        assert await under_test.tasks() == {}
        (loaded,) = await store.load_schedules(grain=GRAIN)
        assert loaded.state is None

    async def test_a_fire_time_makes_one_row_and_a_dropped_state_goes(
        self, under_test: StoreUnderTest
    ) -> None:
        store = under_test.store
        await under_test.define_schedule(schedule_id="sch-a", version=1, doc=SCHEDULE_DOC)
        epoch = await store.claim(grain=GRAIN, owner="a")
        state = ScheduleState(schedule_id="sch-a", version=1, next_fire_at=NOW)
        run = schedule_run("sch-a", NOW)
        await store.admit(
            grain=GRAIN, epoch=epoch, tasks=[run], offsets={}, now=NOW, schedules=[state]
        )
        again = await store.admit(grain=GRAIN, epoch=epoch, tasks=[run], offsets={}, now=NOW)
        assert (again.admitted, again.duplicates) == ([], [run.id])
        assert len(await under_test.tasks()) == 1
        await store.admit(
            grain=GRAIN, epoch=epoch, tasks=[], offsets={}, now=NOW, dropped_schedules=["sch-a"]
        )
        (loaded,) = await store.load_schedules(grain=GRAIN)
        assert loaded.state is None
