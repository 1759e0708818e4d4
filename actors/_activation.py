"""One activation of one actor: its mailbox, its run loop, its timers and its idle watch.

The run loop is the only place that calls the actor, so messages are handled one at a
time in arrival order without locks. The ``ActorSystem`` owns the directory of
activations and decides what happens to messages left over when one ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.actor import Actor, ActorContext, ActorFactory, GrainId, Reason
from actors.clock import Cancellable, Clock
from actors.errors import ActorDeactivated, MailboxFull
from actors.supervision import RestartPolicy

_log = logging.getLogger("wsched.actors.runtime")
#: Float slack when comparing elapsed idle time with the timeout.
_EPSILON_S = 1e-6


@dataclass(frozen=True, kw_only=True)
class KindConfig:
    #: Deactivate after this long without a message; None keeps the actor until told.
    idle_timeout_s: float | None = 300.0
    #: Messages waiting per actor (timer messages not counted against it).
    mailbox_capacity: int = 1000
    restart: RestartPolicy = field(default_factory=RestartPolicy)

    def __post_init__(self) -> None:
        if self.mailbox_capacity < 1:
            raise ValueError("mailbox_capacity must be at least 1")
        if self.idle_timeout_s is not None and self.idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be positive, or None to never idle out")


@dataclass(kw_only=True, eq=False)
class Kind:
    """A registered kind and its counters (read by ``ActorSystem.stats``)."""

    name: str
    factory: ActorFactory
    config: KindConfig
    active: int = 0
    activations: int = 0
    messages: int = 0
    restarts: int = 0


@dataclass(kw_only=True, eq=False, slots=True)
class Envelope:
    message: object
    #: Set for ``ask``: the caller awaits it. None for ``tell`` and timers.
    reply: asyncio.Future[Any] | None = None
    timer: Timer | None = None

    def abandoned(self) -> bool:
        """The asker gave up (timeout, cancellation) or the timer was cancelled."""
        if self.timer is not None and self.timer.cancelled:
            return True
        return self.reply is not None and self.reply.done()

    def succeed(self, value: object) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(value)

    def fail(self, err: BaseException) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(err)


class Timer:
    """A message to self after a delay, once or repeatedly; dies with its activation."""

    def __init__(self, *, owner: Activation, delay_s: float, message: object, repeat: bool) -> None:
        self._owner = owner
        self._delay_s = delay_s
        self._message = message
        self._repeat = repeat
        self._handle: Cancellable | None = None
        self.cancelled = False

    def arm(self) -> None:
        self._handle = self._owner.clock.call_later(self._delay_s, self._fire)

    def cancel(self) -> None:
        self.cancelled = True
        if self._handle is not None:
            self._handle.cancel()
        self._owner.timers.discard(self)

    def handled(self) -> None:
        """Called after the actor handled this timer's message."""
        if self._repeat and not self.cancelled:
            self.arm()

    def _fire(self) -> None:
        self._handle = None
        if not self._repeat:
            self._owner.timers.discard(self)
        self._owner.post(Envelope(message=self._message, timer=self), bounded=False)


@dataclass(kw_only=True, slots=True)
class Stop:
    reason: str
    #: Whether leftover messages go to the next incarnation (idle, failed receive) or are
    #: rejected (explicit deactivate, self-stop, shutdown, failed activation).
    carry_over: bool


class Host(Protocol):
    """What an activation needs from its ``ActorSystem``."""

    @property
    def clock(self) -> Clock: ...

    def activation_failed(self, activation: Activation, err: Exception) -> None: ...

    def activation_ended(self, activation: Activation) -> None: ...


class Activation:
    def __init__(
        self,
        *,
        host: Host,
        grain: GrainId,
        kind: Kind,
        incarnation: int,
        mailbox: deque[Envelope],
    ) -> None:
        self.grain = grain
        self.kind = kind
        self.incarnation = incarnation
        self.mailbox = mailbox
        self.clock = host.clock
        self.timers: set[Timer] = set()
        self.stop: Stop | None = None
        self._host = host
        self._actor: Actor[Any, Any] | None = None
        self._wakeup = asyncio.Event()
        self._busy = False
        self._last_active = self.clock.now()
        self._idle_handle: Cancellable | None = None
        self._ended = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"actor {grain}")
        # The done callback also covers a task cancelled before its first step, when the
        # ``finally`` in ``_run`` never runs.
        self.task.add_done_callback(self._on_task_done)

    # -- called by the system and the context -------------------------------------------

    def post(self, envelope: Envelope, *, bounded: bool = True) -> None:
        if bounded and len(self.mailbox) >= self.kind.config.mailbox_capacity:
            raise MailboxFull(grain=self.grain, capacity=self.kind.config.mailbox_capacity)
        self.mailbox.append(envelope)
        self._wakeup.set()

    def start_timer(self, delay_s: float, message: object, *, repeat: bool) -> Cancellable:
        timer = Timer(owner=self, delay_s=delay_s, message=message, repeat=repeat)
        if self.stop is not None:
            _log.debug("%s is deactivating; timer for %r not started", self.grain, message)
            timer.cancelled = True
            return timer
        self.timers.add(timer)
        timer.arm()
        return timer

    def request_stop(self, reason: str, *, carry_over: bool = False) -> None:
        """Deactivate after the message in hand. Idempotent; a later request without
        carry-over still withdraws the leftovers from the next incarnation."""
        if self.stop is None:
            self.stop = Stop(reason=reason, carry_over=carry_over)
            self._disarm()
        elif not carry_over:
            self.stop.carry_over = False
        if not carry_over:
            self.reject_pending(ActorDeactivated(grain=self.grain, reason=reason))
        self._wakeup.set()

    def take_pending(self) -> list[Envelope]:
        """Empty the mailbox; returns what still wants handling."""
        pending = [env for env in self.mailbox if env.timer is None and not env.abandoned()]
        self.mailbox.clear()
        return pending

    def reject_pending(self, err: BaseException) -> None:
        pending = self.take_pending()
        for envelope in pending:
            envelope.fail(err)
        dropped = sum(1 for envelope in pending if envelope.reply is None)
        if dropped:
            _log.warning("%s: dropped %d told message(s): %s", self.grain, dropped, err)

    async def serve_waiting(self, wanted: Callable[[object], bool]) -> int:
        """``ActorContext.serve_waiting``: from inside the handler of the message in hand."""
        taken = [env for env in self.mailbox if wanted(env.message) and not env.abandoned()]
        if not taken or self.stop is not None:
            return 0
        ids = {id(env) for env in taken}
        kept = [env for env in self.mailbox if id(env) not in ids]
        self.mailbox.clear()
        self.mailbox.extend(kept)
        served = 0
        for envelope in taken:
            if self.stop is not None:
                # Stopping after the message in hand: the rest go back, in their order.
                self.mailbox.extendleft(reversed(taken[served:]))
                break
            await self._handle(envelope)
            served += 1
        self._busy = True  # the message in hand is still being handled
        return served

    # -- the run loop -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if await self._activate():
                self._last_active = self.clock.now()
                self._arm_idle()
                await self._serve()
            await self._deactivate()
        finally:
            self._end()

    async def _activate(self) -> bool:
        context = ActorContext(
            grain=self.grain, incarnation=self.incarnation, clock=self.clock, host=self
        )
        try:
            self._actor = self.kind.factory(self.grain.key, context)
            await self._actor.on_activate()
        except Exception as err:  # noqa: BLE001 - supervision: any failure discards the instance
            self._host.activation_failed(self, err)
            # Nothing queued can be served by an instance that never came up.
            self.reject_pending(err)
            self.request_stop(Reason.FAILED)
            return False
        return True

    async def _serve(self) -> None:
        while self.stop is None:
            if not self.mailbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._handle(self.mailbox.popleft())

    async def _handle(self, envelope: Envelope) -> None:
        if envelope.abandoned() or self._actor is None:
            return
        self._busy = True
        try:
            reply = await self._actor.receive(envelope.message)
        except asyncio.CancelledError:
            # Only a hard stop cancels us; the asker must not wait for its timeout.
            envelope.fail(ActorDeactivated(grain=self.grain, reason="cancelled"))
            raise
        except Exception as err:  # noqa: BLE001 - goes to the asker and to supervision
            envelope.fail(err)
            self._host.activation_failed(self, err)
            self.request_stop(Reason.FAILED, carry_over=True)
            return
        finally:
            self._busy = False
            self._last_active = self.clock.now()
            self.kind.messages += 1
        envelope.succeed(reply)
        if envelope.timer is not None:
            envelope.timer.handled()

    async def _deactivate(self) -> None:
        reason = self.stop.reason if self.stop is not None else Reason.SHUTDOWN
        if self._actor is None:
            return
        try:
            await self._actor.on_deactivate(reason)
        except Exception:  # noqa: BLE001 - a failed flush must not keep a dead actor around
            _log.exception("%s: on_deactivate(%r) failed; removing it anyway", self.grain, reason)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._disarm()
            self._host.activation_ended(self)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            _log.error("%s: actor runtime bug", self.grain, exc_info=err)
        self._end()

    # -- idle watch and timers --------------------------------------------------------

    def _arm_idle(self, delay_s: float | None = None) -> None:
        idle_s = self.kind.config.idle_timeout_s
        if idle_s is not None and self.stop is None:
            self._idle_handle = self.clock.call_later(delay_s or idle_s, self._check_idle)

    def _check_idle(self) -> None:
        """One watchdog per activation, re-armed for the remainder: cheaper than resetting
        a timer on every message."""
        idle_s = self.kind.config.idle_timeout_s
        if self.stop is not None or idle_s is None:
            return
        if self._busy or self.mailbox:
            self._arm_idle(idle_s)
            return
        remaining_s = idle_s - (self.clock.now() - self._last_active)
        if remaining_s > _EPSILON_S:
            self._arm_idle(remaining_s)
        else:
            _log.debug("%s idle for %gs; deactivating", self.grain, idle_s)
            self.request_stop(Reason.IDLE, carry_over=True)

    def _disarm(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        for timer in list(self.timers):
            timer.cancel()
