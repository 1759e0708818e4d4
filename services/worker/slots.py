"""The task slots of one agent process, and waiting on several events at once.

Split out of ``agent.py``: the slots are shared by the poll loops of every pipeline the
agent serves (``Agent`` takes them), and decide how many tasks each poll asks for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


async def wait_any(events: Sequence[asyncio.Event], timeout_s: float | None = None) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class Slots:
    """The task slots of one agent process, shared by the poll loops of its pipelines.

    A poll asks only for slots it holds: taken before the poll, the unused ones given back
    when it answers, one more each time a task ends. So the pipelines together never run
    more than ``capacity`` tasks. Alone, a pipeline asks for every free slot. Among
    several, a pipeline whose last poll found nothing holds one slot while its long poll
    waits (the next task still starts at once), and one whose last poll found tasks asks
    for every free slot without waiting (only what is ready): an idle pipeline keeps one
    slot from a busy one, no more, and two busy ones share what frees up in the order
    they ask.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._freed = asyncio.Event()
        self._sharers = 0

    @property
    def free(self) -> int:
        return self._free

    def join(self) -> None:
        """One more pipeline polls with these slots."""
        self._sharers += 1

    def ask(self, *, found_tasks: bool) -> int:
        """How many slots the next poll asks for (see the class)."""
        return self.capacity if found_tasks or self._sharers <= 1 else 1

    def long_poll(self, held: int) -> bool:
        """Whether a poll holding ``held`` slots may wait for tasks: not when it would
        keep more than one slot from the other pipelines meanwhile (it then only takes
        what is ready, and its next poll, finding nothing, holds one slot and waits)."""
        return held <= 1 or self._sharers <= 1

    async def take(
        self, most: int, stopping: asyncio.Event, *, gather: int = 1, linger_s: float = 0.0
    ) -> int:
        """Wait for a free slot, then up to ``linger_s`` more while fewer than ``gather``
        are free, then take up to ``most`` of the free ones; 0 if ``stopping`` came
        first."""
        while self._free == 0 and not stopping.is_set():
            self._freed.clear()
            await wait_any([self._freed, stopping])
        wanted = min(gather, most)
        if linger_s > 0 and self._free < wanted:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + linger_s
            while self._free < wanted and not stopping.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._freed.clear()
                await wait_any([self._freed, stopping], timeout_s=left)
        if stopping.is_set():
            return 0
        taken = min(most, self._free)
        self._free -= taken
        return taken

    def give(self, count: int) -> None:
        if count > 0:
            self._free += count
            self._freed.set()
