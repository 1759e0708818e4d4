"""The API's waiters and subscribers (D6): woken by events naming their task, no polling."""

from __future__ import annotations

import asyncio

from actors.pipeline.events import StatusChange
from services.live.hub import LiveHub, Subscription, wait_until_final
from services.live.source import Delivered, MemoryEventLog, Position
from services.live.wire import LiveEvent


def event(pipeline: str, *changes: tuple[str, str]) -> LiveEvent:
    return LiveEvent(
        pipeline_id=pipeline,
        changes=tuple(StatusChange(task_id=t, status=s, attempt=1) for t, s in changes),
        counts={"succeeded": 1},
    )


def delivered(e: LiveEvent, offset: int = 0) -> Delivered:
    return Delivered(position=Position(partition=0, offset=offset), event=e)


class Rows:
    """A task row that tests change, and how often it was read."""

    def __init__(self, status: str | None) -> None:
        self.status = status
        self.reads = 0

    async def read(self) -> str | None:
        self.reads += 1
        return self.status


def final(status: str | None) -> bool:
    return status in ("succeeded", "failed")


async def test_a_waiter_is_woken_only_by_a_final_change_of_its_own_task() -> None:
    hub = LiveHub()
    with hub.waiter("p", "t1") as waiter:
        hub.deliver(delivered(event("p", ("t1", "leased"), ("t2", "succeeded"))))
        hub.deliver(delivered(event("q", ("t1", "succeeded"))))
        assert not await waiter.woken(0.01)
        hub.deliver(delivered(event("p", ("t1", "succeeded"))))
        assert await waiter.woken(0.01)
    assert hub.waiting == 0


async def test_wait_until_final_reads_again_only_when_an_event_names_the_task() -> None:
    hub, rows = LiveHub(), Rows("queued")
    waiting = asyncio.create_task(
        wait_until_final(
            hub,
            pipeline_id="p",
            task_id="t1",
            read=rows.read,
            final=final,
            timeout_s=5,
            clock=asyncio.get_running_loop().time,
        )
    )
    await asyncio.sleep(0.05)
    assert rows.reads == 1  # registered, read once, now waiting: no polling
    hub.deliver(delivered(event("p", ("t2", "succeeded"))))
    await asyncio.sleep(0.01)
    assert rows.reads == 1
    rows.status = "succeeded"
    hub.deliver(delivered(event("p", ("t1", "succeeded"))))
    assert await asyncio.wait_for(waiting, 1) == "succeeded"
    assert rows.reads == 2
    assert hub.waiting == 0


async def test_a_lost_event_costs_the_timeout_then_the_row_is_read_again() -> None:
    hub, rows = LiveHub(), Rows("queued")
    loop = asyncio.get_running_loop()

    async def finish_quietly() -> None:
        await asyncio.sleep(0.02)
        rows.status = "succeeded"  # no event: as if it were lost

    finishing = asyncio.create_task(finish_quietly())
    answer = await wait_until_final(
        hub,
        pipeline_id="p",
        task_id="t1",
        read=rows.read,
        final=final,
        timeout_s=0.1,
        clock=loop.time,
    )
    await finishing
    assert answer == "succeeded"
    assert rows.reads == 2


async def test_an_already_final_task_is_answered_at_once() -> None:
    hub, rows = LiveHub(), Rows("failed")
    loop = asyncio.get_running_loop()
    answer = await wait_until_final(
        hub,
        pipeline_id="p",
        task_id="t1",
        read=rows.read,
        final=final,
        timeout_s=30,
        clock=loop.time,
    )
    assert (answer, rows.reads) == ("failed", 1)


async def test_subscribers_get_their_pipeline_and_a_slow_one_is_told_to_reconnect() -> None:
    hub = LiveHub()
    with hub.subscribe("p") as mine, hub.subscribe("q") as other:
        assert hub.streams == 2
        hub.deliver(delivered(event("p", ("t1", "queued")), offset=7))
        got = await mine.next(0.1)
        assert got is not None and got.position == Position(partition=0, offset=7)
        assert await other.next(0.01) is None
    assert hub.streams == 0
    small = Subscription(size=1)
    small.put(delivered(event("p"), 1))
    small.put(delivered(event("p"), 2))
    assert small.overflowed
    assert await small.next(1) is None


async def test_the_hub_follows_the_source_and_restarts_a_failed_reader() -> None:
    log, hub = MemoryEventLog(), LiveHub()
    running = asyncio.create_task(hub.run(log))
    await asyncio.wait_for(log.following.wait(), 1)
    with hub.waiter("p", "t1") as waiter:
        log.append(event("p", ("t1", "succeeded")))
        assert await waiter.woken(1)
    running.cancel()
    assert hub.delivered == 1


async def test_only_watched_pipelines_records_are_delivered() -> None:
    """The reader skips, undecoded, the records of pipelines nobody here waits for or
    streams; a waiter or a subscriber makes its pipeline wanted until it leaves."""
    log, hub = MemoryEventLog(), LiveHub()
    running = asyncio.create_task(hub.run(log))
    await asyncio.wait_for(log.following.wait(), 1)
    assert not hub.wants(b"p")
    log.append(event("p", ("t1", "succeeded")))
    assert hub.delivered == 0
    with hub.waiter("p", "t2") as waiter:
        assert hub.wants(b"p") and not hub.wants(b"q")
        log.append(event("q", ("t2", "succeeded")))  # another pipeline: skipped
        log.append(event("p", ("t2", "succeeded")))
        assert await waiter.woken(1)
        with hub.subscribe("p"), hub.subscribe("q"):
            assert hub.wants(b"q")
        assert hub.wants(b"p") and not hub.wants(b"q")
    assert not hub.wants(b"p")
    running.cancel()
    assert hub.delivered == 1
