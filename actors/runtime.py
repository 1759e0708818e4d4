"""The virtual-actor runtime: one ``ActorSystem`` per process, on one asyncio loop.

Modelled on Orleans grains: callers never create actors; the first message to a
``GrainId`` activates one through the factory registered for its kind, and the runtime
deactivates it when idle, on request, on failure or at shutdown. Each actor handles one
message at a time in arrival order. A failing instance is discarded and the next message
gets a fresh one; a key that keeps failing is quarantined (see ``supervision``).

This module is the public API; it re-exports the types an actor author or caller needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from actors._activation import Activation, Envelope, Kind, KindConfig
from actors.actor import Actor, ActorContext, ActorFactory, GrainId, Reason
from actors.clock import Cancellable, Clock, FakeClock, MonotonicClock, resolve
from actors.errors import (
    ActorDeactivated,
    ActorError,
    ActorUnavailable,
    AskTimeout,
    MailboxFull,
    SystemStopped,
    UnknownKind,
)
from actors.supervision import RestartPolicy, Supervisor

__all__ = [
    "Actor",
    "ActorContext",
    "ActorDeactivated",
    "ActorError",
    "ActorFactory",
    "ActorSystem",
    "ActorUnavailable",
    "AskTimeout",
    "Cancellable",
    "Clock",
    "FakeClock",
    "GrainId",
    "KindConfig",
    "KindStats",
    "MailboxFull",
    "MonotonicClock",
    "Reason",
    "RestartPolicy",
    "SystemStopped",
    "UnknownKind",
]

_log = logging.getLogger("wsched.actors.runtime")


@dataclass(frozen=True, kw_only=True)
class KindStats:
    """A snapshot of one kind's counters, for the metrics layer."""

    active: int
    activations: int
    messages: int
    #: Instances discarded because ``on_activate`` or ``receive`` raised.
    restarts: int
    quarantined: int


class ActorSystem:
    """Hosts the actors of this process. Use as ``async with ActorSystem() as system``."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ask_timeout_s: float = 30.0,
        shutdown_grace_s: float = 10.0,
    ) -> None:
        self._clock: Clock = clock or MonotonicClock()
        self._ask_timeout_s = ask_timeout_s
        self._shutdown_grace_s = shutdown_grace_s
        self._kinds: dict[str, Kind] = {}
        self._directory: dict[GrainId, Activation] = {}
        # Kept per key for the life of the process so an incarnation number is never reused.
        self._incarnations: dict[GrainId, int] = {}
        self._supervisor = Supervisor(clock=self._clock)
        self._stopped = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def clock(self) -> Clock:
        return self._clock

    def register(
        self, kind: str, factory: ActorFactory, *, config: KindConfig | None = None
    ) -> None:
        if kind in self._kinds:
            raise ValueError(f"actor kind {kind!r} is already registered")
        self._kinds[kind] = Kind(name=kind, factory=factory, config=config or KindConfig())

    # -- messaging --------------------------------------------------------------------

    def tell(self, grain: GrainId, message: object) -> None:
        """Queue ``message`` without waiting. Raises ``MailboxFull``, ``ActorUnavailable``
        (quarantine, deactivation, shutdown) or ``UnknownKind`` at once; failures while
        handling it are logged, not reported."""
        self._post(grain, Envelope(message=message))

    async def ask(self, grain: GrainId, message: object, *, timeout_s: float | None = None) -> Any:
        """Send ``message`` and return the actor's reply, or raise what ``receive`` raised.

        ``timeout_s`` defaults to the system's ``ask_timeout_s``; past it ``AskTimeout`` is
        raised. A message whose asker is gone (timed out, cancelled) is skipped if it has
        not started yet, so a poll nobody waits for does not lease a task.
        """
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._post(grain, Envelope(message=message, reply=reply))
        limit_s = self._ask_timeout_s if timeout_s is None else timeout_s

        def expire() -> None:
            if not reply.done():
                reply.set_exception(AskTimeout(grain=grain, message=message, timeout_s=limit_s))

        handle = self._clock.call_later(limit_s, expire)
        try:
            return await reply
        finally:
            handle.cancel()

    def _post(self, grain: GrainId, envelope: Envelope) -> None:
        if self._stopped:
            raise SystemStopped(grain=grain)
        kind = self._kinds.get(grain.kind)
        if kind is None:
            raise UnknownKind(kind=grain.kind)
        activation = self._directory.get(grain)
        if activation is None:
            self._supervisor.check(grain, kind.config.restart)
            activation = self._spawn(grain, kind, deque())
        elif (stop := activation.stop) is not None:
            # It is on its way out: the message waits for the next incarnation if allowed.
            if not stop.carry_over:
                raise ActorDeactivated(grain=grain, reason=stop.reason)
            self._supervisor.check(grain, kind.config.restart)
        activation.post(envelope)

    def _spawn(self, grain: GrainId, kind: Kind, mailbox: deque[Envelope]) -> Activation:
        incarnation = self._incarnations.get(grain, 0) + 1
        self._incarnations[grain] = incarnation
        activation = Activation(
            host=self, grain=grain, kind=kind, incarnation=incarnation, mailbox=mailbox
        )
        self._directory[grain] = activation
        kind.active += 1
        kind.activations += 1
        return activation

    # -- deactivation -----------------------------------------------------------------

    async def deactivate(
        self, grain: GrainId, reason: str = Reason.REVOKED, *, timeout_s: float | None = None
    ) -> None:
        """Deactivate ``grain`` after its message in hand and wait until it is gone.

        Queued messages and those sent meanwhile get ``ActorDeactivated``; a message sent
        afterwards activates a new instance. Past ``timeout_s`` the actor is cancelled.
        """
        activation = self._directory.get(grain)
        if activation is None:
            return
        activation.request_stop(reason)
        await self._join([activation], timeout_s)

    async def stop(self, *, grace_s: float | None = None) -> None:
        """Deactivate every actor with ``Reason.SHUTDOWN``; cancel those still running
        after ``grace_s`` (default: the system's ``shutdown_grace_s``). Idempotent."""
        self._stopped = True
        activations = list(self._directory.values())
        for activation in activations:
            activation.request_stop(Reason.SHUTDOWN)
        await self._join(activations, self._shutdown_grace_s if grace_s is None else grace_s)

    async def _join(self, activations: Iterable[Activation], timeout_s: float | None) -> None:
        running = {a.task for a in activations if not a.task.done()}
        if running and timeout_s is not None:
            running = await self._wait(running, timeout_s)
            for task in running:
                _log.warning("%s did not deactivate within %gs; cancelling", task, timeout_s)
                task.cancel()
        if running:
            await asyncio.wait(running)

    async def _wait(
        self, tasks: set[asyncio.Task[None]], timeout_s: float
    ) -> set[asyncio.Task[None]]:
        """Wait for ``tasks`` on the system's clock; returns those still running."""
        expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self._clock.call_later(timeout_s, lambda: resolve(expired))
        pending = set(tasks)
        try:
            while pending and not expired.done():
                await asyncio.wait([*pending, expired], return_when=asyncio.FIRST_COMPLETED)
                pending = {task for task in pending if not task.done()}
        finally:
            handle.cancel()
        return pending

    # -- called by activations (the ``Host`` protocol) ----------------------------------

    def activation_failed(self, activation: Activation, err: Exception) -> None:
        activation.kind.restarts += 1
        _log.warning(
            "%s (incarnation %d) failed; the next message starts a new instance",
            activation.grain,
            activation.incarnation,
            exc_info=err,
        )
        self._supervisor.record_failure(activation.grain, activation.kind.config.restart, err)

    def activation_ended(self, activation: Activation) -> None:
        grain, kind = activation.grain, activation.kind
        kind.active -= 1
        if self._directory.get(grain) is activation:
            del self._directory[grain]
        stop = activation.stop
        if self._stopped:
            activation.reject_pending(SystemStopped(grain=grain))
        elif stop is None or not stop.carry_over:
            reason = stop.reason if stop is not None else "cancelled"
            activation.reject_pending(ActorDeactivated(grain=grain, reason=reason))
        else:
            try:
                self._supervisor.check(grain, kind.config.restart)
            except ActorUnavailable as err:
                activation.reject_pending(err)
                return
            if pending := activation.take_pending():
                self._spawn(grain, kind, deque(pending))

    # -- observability ----------------------------------------------------------------

    def is_active(self, grain: GrainId) -> bool:
        return grain in self._directory

    def active_grains(self, kind: str | None = None) -> list[GrainId]:
        return [grain for grain in self._directory if kind is None or grain.kind == kind]

    def stats(self) -> dict[str, KindStats]:
        """Counters per registered kind; cumulative ones only grow."""
        quarantined = self._supervisor.quarantined_by_kind()
        return {
            name: KindStats(
                active=kind.active,
                activations=kind.activations,
                messages=kind.messages,
                restarts=kind.restarts,
                quarantined=quarantined[name],
            )
            for name, kind in self._kinds.items()
        }
