"""What an actor author sees: the identity, the base class and the context of an actor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Protocol, TypeVar

from actors.clock import Cancellable, Clock

MsgT = TypeVar("MsgT")
ReplyT = TypeVar("ReplyT")


@dataclass(frozen=True, kw_only=True, slots=True)
class GrainId:
    """Names an actor: ``kind`` selects the registered factory, ``key`` the instance.

    A pipeline grain is ``GrainId(kind="pipeline", key=str(GrainKey(...)))``, its
    ``"<pipeline id>/<slice>"`` text (``actors.pipeline.actor.grain_id``).
    """

    kind: str
    key: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.key}"


class Reason(StrEnum):
    """Why an actor is deactivated; ``ActorSystem.deactivate`` also accepts any string."""

    IDLE = "idle"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    #: The actor called ``ActorContext.self_stop``.
    STOPPED = "stopped"
    #: Its partition or shard moved to another replica.
    REVOKED = "revoked"


class Actor(ABC, Generic[MsgT, ReplyT]):
    """One incarnation of a virtual actor. The runtime calls it one message at a time.

    An instance lives from ``on_activate`` to ``on_deactivate``; after a failure or a
    deactivation the next message goes to a fresh instance made by the kind's factory.
    """

    async def on_activate(self) -> None:
        """Load state before the first message. Raising discards this instance."""

    @abstractmethod
    async def receive(self, message: MsgT) -> ReplyT:
        """Handle one message; the return value answers ``ask``. Raising discards the
        instance and reaches the asking caller."""

    async def on_deactivate(self, reason: str) -> None:
        """Flush and release before removal; ``reason`` is a ``Reason`` value or the one
        given to ``ActorSystem.deactivate``. Errors are logged, never propagated."""


class _Host(Protocol):
    """What a context needs from the activation that owns it."""

    def start_timer(self, delay_s: float, message: object, *, repeat: bool) -> Cancellable: ...

    def request_stop(self, reason: str) -> None: ...

    async def serve_waiting(self, wanted: Callable[[object], bool]) -> int: ...


class ActorContext:
    """Given to the factory with the key: the actor's handle on the runtime."""

    def __init__(self, *, grain: GrainId, incarnation: int, clock: Clock, host: _Host) -> None:
        self._grain = grain
        self._incarnation = incarnation
        self._clock = clock
        self._host = host

    @property
    def grain(self) -> GrainId:
        return self._grain

    @property
    def key(self) -> str:
        return self._grain.key

    @property
    def incarnation(self) -> int:
        """Counts activations of this key in this process, from 1, restarts included.

        Local to the process: the fenced ownership epoch lives in the store.
        """
        return self._incarnation

    @property
    def clock(self) -> Clock:
        return self._clock

    def schedule(self, delay_s: float, message: object) -> Cancellable:
        """Deliver ``message`` to this actor once, after ``delay_s``, as a tell.

        Timer messages skip the mailbox bound (the actor controls how many it sets) and
        die with this incarnation: deactivation cancels them, and ``cancel`` withdraws a
        message already queued.
        """
        return self._host.start_timer(delay_s, message, repeat=False)

    def every(self, interval_s: float, message: object) -> Cancellable:
        """Deliver ``message`` every ``interval_s``, counted from the end of handling the
        previous one, so slow ticks never pile up."""
        return self._host.start_timer(interval_s, message, repeat=True)

    async def serve_waiting(self, wanted: Callable[[object], bool]) -> int:
        """Handle now, in mailbox order, the messages waiting in the mailbox for which
        ``wanted`` is true, as if they had come before the one in hand; how many.

        For a handler that runs long in steps (a grain admitting a large batch in
        transactions): between two steps, when its state is whole, it lets the messages
        that must not wait for the rest (polls, reports) through. The handler must be
        able to take them at that point; nothing else is reordered.
        """
        return await self._host.serve_waiting(wanted)

    def self_stop(self, reason: str = Reason.STOPPED) -> None:
        """Deactivate after the current message. Queued messages are rejected with
        ``ActorDeactivated``; a later message activates a new instance."""
        self._host.request_stop(reason)


ActorFactory = Callable[[str, ActorContext], Actor[Any, Any]]
"""Makes one instance from the key and its context; called at every activation."""
