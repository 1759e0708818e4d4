"""The timer heap keeps an exact prefix of the store's timers, bounded in count."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from actors.pipeline.model import Status, Task
from actors.pipeline.timers import Taken, TimerHeap, TimerKey

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def opened(capacity: int) -> TimerHeap:
    """A heap whose store was read to the end: it holds every timer."""
    heap = TimerHeap(capacity=capacity)
    heap.refill([], limit=capacity)
    assert heap.horizon is None
    return heap


def ids(taken: list[Taken]) -> list[str]:
    return [key[1] for key, _ in taken]


def test_a_new_heap_holds_nothing_and_asks_for_the_store() -> None:
    heap = TimerHeap(capacity=4)
    assert heap.wants_refill() and heap.refill_after is None
    assert not heap.offer("a", at(5))  # before the first read, the store alone keeps it
    heap.refill([(at(5), "a"), (at(1), "b")], limit=4)
    assert heap.horizon is None and not heap.wants_refill()
    assert ids(heap.pop_due(wall=at(10), limit=10)) == ["b", "a"]


def test_count_due_counts_the_timers_due_by_a_time() -> None:
    heap = opened(10)
    for i in range(5):
        heap.offer(f"t{i}", at(10 * i))
    assert heap.count_due(by=at(-1)) == 0
    assert heap.count_due(by=at(20)) == 3
    assert heap.count_due(by=at(99)) == 5


def test_only_due_timers_fire_soonest_first_and_within_the_limit() -> None:
    heap = opened(10)
    for name, seconds in (("late", 30), ("soon", 1), ("now", 0), ("also-now", 0)):
        assert heap.offer(name, at(seconds))
    assert heap.next_due() == at(0)
    assert ids(heap.pop_due(wall=at(0), limit=1)) == ["also-now"]
    assert ids(heap.pop_due(wall=at(1), limit=10)) == ["now", "soon"]
    assert ids(heap.pop_due(wall=at(29.9), limit=10)) == []
    assert len(heap) == 1 and "late" in heap


def test_when_full_the_latest_is_let_go_and_the_horizon_moves_in() -> None:
    heap = opened(3)
    for i in range(3):
        heap.offer(f"t{i}", at(10 * (i + 1)))  # 10, 20, 30
    assert heap.offer("t-early", at(5))
    assert "t2" not in heap and heap.horizon == (at(20), "t1")
    assert not heap.offer("t-late", at(25))  # beyond the horizon: the store keeps it
    assert heap.offer("t-mid", at(15)) is True
    assert heap.horizon == (at(15), "t-mid") and "t1" not in heap
    assert not heap.offer("t-last", at(99))


def test_a_timer_offered_past_a_full_heap_reports_it_was_not_kept() -> None:
    heap = opened(2)
    heap.offer("a", at(1))
    heap.offer("b", at(2))
    heap.horizon = None  # the store holds nothing else
    assert heap.offer("c", at(3)) is False
    assert heap.horizon == (at(2), "b")


def test_remove_forgets_a_timer_and_reoffer_moves_it() -> None:
    heap = opened(5)
    heap.offer("a", at(1))
    heap.offer("b", at(2))
    assert heap.remove("a") and not heap.remove("a")
    heap.offer("b", at(0.5))
    assert ids(heap.pop_due(wall=at(0.5), limit=5)) == ["b"]
    assert len(heap) == 0


def test_refill_continues_from_the_horizon_and_opens_at_the_end() -> None:
    heap = TimerHeap(capacity=4)
    heap.refill([(at(i), f"t{i}") for i in range(4)], limit=4)
    assert heap.horizon == (at(3), "t3") and not heap.wants_refill()
    heap.pop_due(wall=at(2), limit=10)
    assert heap.wants_refill() and heap.refill_room() == 3
    # The store answers from after the horizon; an older row (already here) is ignored.
    heap.refill([(at(3), "t3"), (at(4), "t4")], limit=3)
    assert heap.horizon is None
    assert ids(heap.pop_due(wall=at(9), limit=10)) == ["t3", "t4"]


def test_capacity_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TimerHeap(capacity=1)


def test_heap_and_store_together_fire_every_timer_once_in_order() -> None:
    """A model check: timers offered at random, the heap small, the store the rest;
    none fires early, none is lost, none fires twice."""
    rng = random.Random(7)
    store: set[TimerKey] = set()
    heap = TimerHeap(capacity=8)
    fired: list[TimerKey] = []

    def refill() -> None:
        after = heap.horizon
        assert after is not None
        page = sorted(key for key in store if key > after)[: heap.refill_room()]
        heap.refill(page, limit=heap.refill_room())

    refill()
    wall = 0.0
    for n in range(400):
        key = (at(wall + rng.uniform(0, 50)), f"t{n:03d}")
        store.add(key)  # durable first, as the grain writes before it offers
        heap.offer(key[1], key[0])
        if rng.random() < 0.3:
            wall += rng.uniform(0, 5)
            for task_id in ids(heap.pop_due(wall=at(wall), limit=5)):
                key = next(k for k in store if k[1] == task_id)
                assert key[0] <= at(wall), "fired before it was due"
                store.discard(key)
                fired.append(key)
            if heap.wants_refill():
                refill()
    for _ in range(100):  # bounded: a lost timer fails here, it does not hang
        if not store:
            break
        wall += 10
        for task_id in ids(heap.pop_due(wall=at(wall), limit=1000)):
            key = next(k for k in store if k[1] == task_id)
            store.discard(key)
            fired.append(key)
        if heap.wants_refill():
            refill()
    assert not store, f"{len(store)} timer(s) never fired"
    assert len(fired) == len({k[1] for k in fired}) == 400
    assert len(heap) == 0


def test_timers_whose_firing_failed_go_back_first() -> None:
    heap = opened(4)
    heap.offer("a", at(1))
    heap.offer("b", at(9))
    taken = heap.pop_due(wall=at(5), limit=4)
    assert taken == [((at(1), "a"), None)] and "a" not in heap
    heap.put_back(taken)
    assert heap.next_due() == at(1) and "a" in heap
    assert ids(heap.pop_due(wall=at(9), limit=4)) == ["a", "b"]


def task(task_id: str, due: dt.datetime, size: int) -> Task:
    return Task(
        id=task_id, attempt=1, status=Status.SCHEDULED, data=b"x" * size, due_at=due, created_at=T0
    )


def test_offered_tasks_ride_with_their_timers_within_the_byte_budget() -> None:
    heap = TimerHeap(capacity=4, payload_bytes=250)
    heap.refill([], limit=4)
    a, b, c = task("a", at(1), 100), task("b", at(2), 100), task("c", at(3), 100)
    for item in (a, b, c):
        heap.offer(item.id, item.due_at, item)
    assert heap.payload("a") is a and heap.payload("b") is b
    assert heap.payload("c") is None  # over the budget: fired from a store read
    taken = heap.pop_due(wall=at(5), limit=4)
    assert [(key[1], held) for key, held in taken] == [("a", a), ("b", b), ("c", None)]
    heap.put_back(taken)  # given back, the payloads come back within the budget
    assert heap.payload("a") is a and heap.payload("b") is b
    heap.remove("a")
    heap.offer("c", at(3), c)  # room again
    assert heap.payload("c") is c


def test_a_timer_let_go_at_capacity_releases_its_payload() -> None:
    heap = TimerHeap(capacity=2, payload_bytes=1000)
    heap.refill([], limit=2)
    for i in range(5):
        item = task(f"t{i}", at(10 - i), 100)
        heap.offer(item.id, item.due_at, item)
    assert ids(heap.pop_due(wall=at(99), limit=9)) == ["t4", "t3"]
    late = task("late", at(1), 800)  # fits only if the let-go timers gave their bytes back
    heap.offer("late", late.due_at, late)
    assert heap.payload("late") is late
