"""GrainHandle: how code outside a pipeline's actor talks to it.

``PipelineActor`` serialises calls into its ``PipelineCore``; a handle sends it messages
through the actor system and awaits the futures it answers with *outside* the mailbox, so
a long poll or a report waiting for its flush never holds up other messages. The worker
API and the forwarder reach a grain only through its handle (see ``actors/pipeline/core.py``
for the other layers). A grain that cannot take messages now raises ``Unavailable``.

A grain with nothing to do deactivates (``Timing.deactivate_after_s``); its replica keeps
its handle and its forwarder, so a record activates it again. A poll must not: standing
workers poll idle pipelines all the time, and each activation claims the grain and loads
it from the store. A poll of an inactive grain is therefore parked here, in memory, until
something else activates the grain (``activated``, called by the replica at each
activation) or its wait ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from actors.errors import ActorDeactivated, ActorError
from actors.pipeline import actor as grain_actor
from actors.pipeline.model import (
    AdmitBatch,
    AdmitResult,
    Grant,
    LeaseToken,
    Report,
    ReportAck,
    Verdict,
)
from actors.runtime import ActorSystem, GrainId
from services.scheduler.worker_api import Unavailable


class GrainHandle:
    """A hosted grain as the worker API and the forwarder see it: asks into the actor,
    waits outside it."""

    def __init__(self, *, system: ActorSystem, grain: GrainId, lease_timeout_s: float) -> None:
        self._system = system
        self._grain = grain
        self.lease_timeout_s = lease_timeout_s
        #: Set at each activation of the grain; parked polls wait for it.
        self._activation = asyncio.Event()
        #: Polls parked now (for metrics and tests).
        self.parked = 0

    def activated(self) -> None:
        """The grain is being activated: parked polls go to it."""
        self._activation.set()

    async def _ask(self, message: object) -> Any:
        try:
            return grain_actor.unwrap(await self._system.ask(self._grain, message))
        except ActorError as err:
            raise Unavailable(str(err)) from err

    async def poll(
        self, *, worker: str, max_tasks: int, max_bytes: int, wait_s: float
    ) -> list[Grant]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self._system.is_active(self._grain):
            if not await self._park(deadline - loop.time()):
                return []
        poll = grain_actor.Poll(worker=worker, max_tasks=max_tasks, max_bytes=max_bytes)
        try:
            future: asyncio.Future[list[Grant]] = grain_actor.unwrap(
                await self._system.ask(self._grain, poll)
            )
        except ActorDeactivated:
            return []  # it went idle as the poll arrived: the worker polls again
        except ActorError as err:
            raise Unavailable(str(err)) from err
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
        except TimeoutError:
            if not self._system.is_active(self._grain):
                return future.result() if future.done() else []  # released when it left
            # Processed in mailbox order: once withdrawn nobody resolves the future, and
            # grants made just before the withdrawal are returned, not lost.
            with contextlib.suppress(ActorError):
                await self._system.ask(self._grain, grain_actor.Withdraw(future=future))
            return future.result() if future.done() else []
        except asyncio.CancelledError:
            if self._system.is_active(self._grain):
                with contextlib.suppress(ActorError):
                    self._system.tell(self._grain, grain_actor.Withdraw(future=future))
            raise

    async def _park(self, wait_s: float) -> bool:
        """Wait, without activating the grain, until it is activated; False if the wait
        ended first."""
        if wait_s <= 0:
            return False
        self._activation.clear()
        if self._system.is_active(self._grain):
            return True
        self.parked += 1
        try:
            async with asyncio.timeout(wait_s):
                await self._activation.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.parked -= 1

    async def admit(self, batch: AdmitBatch) -> AdmitResult:
        """Admit a batch of the pipeline's topic (the forwarder's way in)."""
        result: AdmitResult = await self._ask(grain_actor.Admit(batch=batch))
        return result

    async def heartbeat(self, tokens: Sequence[LeaseToken]) -> list[Verdict]:
        verdicts: list[Verdict] = await self._ask(grain_actor.Heartbeat(tokens=tokens))
        return verdicts

    async def report(self, reports: Sequence[Report]) -> list[ReportAck]:
        acks, durable = await self._ask(grain_actor.ReportBatch(reports=reports))
        await durable  # acknowledged only once the results are in the store
        return list(acks)
