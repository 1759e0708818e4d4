"""Errors the actor runtime raises to callers of ``tell`` and ``ask``.

``ActorUnavailable`` and its subclasses mean "try again later" and carry ``retry_after_s``,
so an adapter can map all of them to one retryable status (gRPC ``UNAVAILABLE``).
"""

from __future__ import annotations

from actors.actor import GrainId


class ActorError(Exception):
    """Base of the errors raised by the actor runtime itself."""


class UnknownKind(ActorError, LookupError):
    def __init__(self, *, kind: str) -> None:
        super().__init__(
            f"no actor kind {kind!r} is registered; "
            f"call ActorSystem.register({kind!r}, factory) before sending to it"
        )
        self.kind = kind


class MailboxFull(ActorError):
    """Backpressure: the actor is behind; the caller should slow down and retry."""

    def __init__(self, *, grain: GrainId, capacity: int) -> None:
        super().__init__(
            f"the mailbox of {grain} is full ({capacity} messages); retry later, or raise "
            f"mailbox_capacity in the KindConfig of {grain.kind!r}"
        )
        self.grain = grain
        self.capacity = capacity


class AskTimeout(ActorError, TimeoutError):
    def __init__(self, *, grain: GrainId, message: object, timeout_s: float) -> None:
        super().__init__(
            f"{grain} did not answer {type(message).__name__} within {timeout_s:g}s; "
            "the actor may still handle it, so only retry idempotent requests"
        )
        self.grain = grain
        self.timeout_s = timeout_s


class ActorUnavailable(ActorError):
    """The actor takes no messages now. Raised as is when the key is quarantined after
    failing too often; ``last_error`` is the failure that tripped the quarantine."""

    def __init__(
        self,
        *,
        grain: GrainId,
        retry_after_s: float,
        last_error: BaseException | None = None,
        detail: str = "",
    ) -> None:
        detail = detail or (
            f"{grain} failed too often and is quarantined; last error: {last_error!r}"
        )
        super().__init__(f"{detail}; retry after {retry_after_s:.1f}s")
        self.grain = grain
        self.retry_after_s = retry_after_s
        self.last_error = last_error


class ActorDeactivated(ActorUnavailable):
    """The message was queued behind, or sent during, a deactivation (explicit, self-stop,
    shutdown or failed activation). Retrying activates a new instance."""

    def __init__(self, *, grain: GrainId, reason: str) -> None:
        super().__init__(
            grain=grain,
            retry_after_s=0.0,
            detail=f"{grain} was deactivated ({reason}) before it handled the message",
        )
        self.reason = reason


class SystemStopped(ActorUnavailable):
    def __init__(self, *, grain: GrainId) -> None:
        super().__init__(
            grain=grain,
            retry_after_s=0.0,
            detail=f"the actor system is shut down; {grain} takes no messages here",
        )
