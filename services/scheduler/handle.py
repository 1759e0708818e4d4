"""GrainHandle: how code outside a pipeline's actor talks to it.

``PipelineActor`` serialises calls into its ``PipelineCore``; a handle sends it messages
through the actor system and awaits the futures it answers with *outside* the mailbox, so
a long poll or a report waiting for its flush never holds up other messages. The worker
API and the forwarder reach a grain only through its handle (see ``actors/pipeline/core.py``
for the other layers). A grain that cannot take messages now raises ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from actors.errors import ActorError
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

    async def _ask(self, message: object) -> Any:
        try:
            return grain_actor.unwrap(await self._system.ask(self._grain, message))
        except ActorError as err:
            raise Unavailable(str(err)) from err

    async def poll(
        self, *, worker: str, max_tasks: int, max_bytes: int, wait_s: float
    ) -> list[Grant]:
        future: asyncio.Future[list[Grant]] = await self._ask(
            grain_actor.Poll(worker=worker, max_tasks=max_tasks, max_bytes=max_bytes)
        )
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait_s)
        except TimeoutError:
            # Processed in mailbox order: once withdrawn nobody resolves the future, and
            # grants made just before the withdrawal are returned, not lost.
            await self._ask(grain_actor.Withdraw(future=future))
            return future.result() if future.done() else []
        except asyncio.CancelledError:
            with contextlib.suppress(ActorError):
                self._system.tell(self._grain, grain_actor.Withdraw(future=future))
            raise

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
