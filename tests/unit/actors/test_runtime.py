"""The actor runtime: activation, mailbox, ordering, deactivation, supervision, timers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from actors.runtime import (
    Actor,
    ActorContext,
    ActorDeactivated,
    ActorSystem,
    ActorUnavailable,
    AskTimeout,
    Cancellable,
    FakeClock,
    GrainId,
    KindConfig,
    MailboxFull,
    RestartPolicy,
    SystemStopped,
    UnknownKind,
)

#: Guard for awaiting an effect that needs no time to pass; only reached when broken.
GUARD_S = 2.0


# -- messages the probe understands ---------------------------------------------------


@dataclass(frozen=True)
class Echo:
    value: object


@dataclass(frozen=True)
class Fail:
    error: Exception


@dataclass(frozen=True)
class Block:
    """Hold the actor inside ``receive`` until ``gate`` is set."""

    gate: asyncio.Event
    entered: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class After:
    delay_s: float
    message: object
    repeat: bool = False


@dataclass(frozen=True)
class LetThrough:
    """Hold the actor until ``gate`` is set, then handle at once the waiting ``Fail``
    messages and ``Echo`` messages whose value is text (``ActorContext.serve_waiting``)."""

    gate: asyncio.Event
    entered: asyncio.Event = field(default_factory=asyncio.Event)


def _let_through(message: object) -> bool:
    return isinstance(message, Fail) or (
        isinstance(message, Echo) and isinstance(message.value, str)
    )


class Who:
    """Answers the incarnation."""


class StopSelf:
    pass


@dataclass(kw_only=True)
class Behaviour:
    """How probes of one kind misbehave, shared by all their incarnations."""

    activate_gate: asyncio.Event | None = None
    fail_activation: set[int] = field(default_factory=set)
    fail_deactivation: bool = False
    hang_deactivation: bool = False


class Probe(Actor[object, object]):
    """Writes what happens to it into a journal shared across incarnations."""

    def __init__(self, *, context: ActorContext, journal: list[str], how: Behaviour) -> None:
        self.context = context
        self.journal = journal
        self.how = how
        self.timers: list[Cancellable] = []
        self.inside = 0
        self.name = f"{context.key}#{context.incarnation}"

    async def on_activate(self) -> None:
        self.journal.append(f"{self.name} activate")
        if self.how.activate_gate is not None:
            await self.how.activate_gate.wait()
        if self.context.incarnation in self.how.fail_activation:
            raise RuntimeError("cannot load")

    async def receive(self, message: object) -> object:
        match message:
            case Echo(value):
                self.journal.append(f"{self.name} got {value}")
                return value
            case Fail(error):
                raise error
            case Block(gate, entered):
                entered.set()
                await gate.wait()
                self.journal.append(f"{self.name} unblocked")
            case After(delay_s, inner, repeat):
                self.timers.append(
                    self.context.every(delay_s, inner)
                    if repeat
                    else self.context.schedule(delay_s, inner)
                )
            case LetThrough(gate, entered):
                entered.set()
                await gate.wait()
                served = await self.context.serve_waiting(_let_through)
                self.journal.append(f"{self.name} let {served} through")
                return served
            case Who():
                return self.context.incarnation
            case StopSelf():
                self.context.self_stop()
                return "stopping"
        return None

    async def on_deactivate(self, reason: str) -> None:
        self.journal.append(f"{self.name} deactivate {reason}")
        if self.how.fail_deactivation:
            raise RuntimeError("flush failed")
        if self.how.hang_deactivation:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.journal.append(f"{self.name} cancelled")
                raise


@dataclass(kw_only=True)
class World:
    system: ActorSystem
    clock: FakeClock
    journal: list[str] = field(default_factory=list)

    def add_kind(
        self, kind: str = "probe", *, how: Behaviour | None = None, config: KindConfig | None = None
    ) -> None:
        behaviour = how or Behaviour()
        self.system.register(
            kind,
            lambda _key, context: Probe(context=context, journal=self.journal, how=behaviour),
            config=config,
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock()
    async with ActorSystem(clock=clock, ask_timeout_s=60.0) as system:
        yield World(system=system, clock=clock)


def probe(key: str = "a") -> GrainId:
    return GrainId(kind="probe", key=key)


async def entered(block: Block | LetThrough) -> None:
    await asyncio.wait_for(block.entered.wait(), GUARD_S)


# -- activation ---------------------------------------------------------------------


async def test_first_message_activates_and_each_activation_gets_the_next_incarnation(
    world: World,
) -> None:
    world.add_kind()
    assert not world.system.is_active(probe())

    assert await world.system.ask(probe(), Who()) == 1
    assert world.system.is_active(probe())
    await world.system.deactivate(probe(), "revoked")
    assert not world.system.is_active(probe())
    assert await world.system.ask(probe(), Who()) == 2

    assert world.journal == ["a#1 activate", "a#1 deactivate revoked", "a#2 activate"]


async def test_messages_sent_during_activation_wait_for_it(world: World) -> None:
    gate = asyncio.Event()
    world.add_kind(how=Behaviour(activate_gate=gate))

    world.system.tell(probe(), Echo(1))
    second = asyncio.create_task(world.system.ask(probe(), Echo(2)))
    await world.clock.settle()
    assert world.journal == ["a#1 activate"]
    assert not second.done()

    gate.set()
    assert await second == 2
    assert world.journal == ["a#1 activate", "a#1 got 1", "a#1 got 2"]


async def test_unknown_kind_is_rejected_with_a_hint(world: World) -> None:
    with pytest.raises(UnknownKind, match=r"register\('nope'"):
        world.system.tell(GrainId(kind="nope", key="x"), Echo(1))


# -- one at a time, in order --------------------------------------------------------


class Overlap(Actor[int, int]):
    """Yields to the loop inside ``receive`` and records how many calls overlap."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0

    async def receive(self, message: int) -> int:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        for _ in range(5):
            await asyncio.sleep(0)
        self.inside -= 1
        return message


async def test_concurrent_asks_to_one_actor_never_interleave(world: World) -> None:
    actor = Overlap()
    world.system.register("overlap", lambda _key, _context: actor)
    grain = GrainId(kind="overlap", key="x")

    replies = await asyncio.gather(*(world.system.ask(grain, n) for n in range(20)))

    assert replies == list(range(20))
    assert actor.most_inside == 1


async def test_messages_are_handled_in_arrival_order(world: World) -> None:
    world.add_kind()
    for n in range(30):
        world.system.tell(probe(), Echo(n))
    await world.system.ask(probe(), Echo("end"))

    assert world.journal[1:] == [f"a#1 got {n}" for n in [*range(30), "end"]]


async def test_a_handler_lets_the_wanted_waiting_messages_through_in_their_order(
    world: World,
) -> None:
    world.add_kind()
    hold = LetThrough(gate=asyncio.Event())
    held = asyncio.create_task(world.system.ask(probe(), hold))
    await entered(hold)
    for value in (1, "a", 2, "b"):
        world.system.tell(probe(), Echo(value))
    hold.gate.set()
    assert await held == 2
    await world.system.ask(probe(), Echo("end"))

    assert world.journal[1:] == [
        "a#1 got a",
        "a#1 got b",
        "a#1 let 2 through",
        "a#1 got 1",
        "a#1 got 2",
        "a#1 got end",
    ]


async def test_a_message_let_through_that_fails_leaves_the_rest_to_the_next_instance(
    world: World,
) -> None:
    """A failed receive stops the actor after the message in hand: the messages taken
    out after it go back in their order, to the next incarnation, as they would have."""
    world.add_kind()
    hold = LetThrough(gate=asyncio.Event())
    held = asyncio.create_task(world.system.ask(probe(), hold))
    await entered(hold)
    failing = asyncio.create_task(world.system.ask(probe(), Fail(RuntimeError("boom"))))
    asks = [asyncio.create_task(world.system.ask(probe(), Echo(v))) for v in ("a", "b")]
    await asyncio.sleep(0)
    hold.gate.set()
    assert await held == 1
    with pytest.raises(RuntimeError, match="boom"):
        await failing
    assert await asyncio.gather(*asks) == ["a", "b"]
    assert [line for line in world.journal if "got" in line] == ["a#2 got a", "a#2 got b"]


async def test_tell_returns_at_once_and_its_failure_is_logged_not_raised(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add_kind()
    caplog.set_level(logging.WARNING, logger="wsched.actors")

    world.system.tell(probe(), Fail(ValueError("told badly")))  # returns before it is handled
    assert world.journal == []
    assert await world.system.ask(probe(), Who()) == 2
    assert any(
        r.name == "wsched.actors.runtime" and "told badly" in str(r.exc_info)
        for r in caplog.records
    )


# -- ask timeout and backpressure ---------------------------------------------------


async def test_ask_times_out_on_the_system_clock_and_a_queued_abandoned_ask_is_skipped(
    world: World,
) -> None:
    world.add_kind()
    block = Block(gate=asyncio.Event())
    world.system.tell(probe(), block)
    await entered(block)
    queued = asyncio.create_task(world.system.ask(probe(), Echo("late"), timeout_s=5.0))

    await world.clock.advance(4.9)
    assert not queued.done()
    await world.clock.advance(0.1)
    with pytest.raises(AskTimeout, match="did not answer Echo within 5s"):
        await queued

    block.gate.set()
    assert await world.system.ask(probe(), Echo("fresh")) == "fresh"
    assert "a#1 got late" not in world.journal


async def test_a_full_mailbox_rejects_tell_and_ask(world: World) -> None:
    world.add_kind(config=KindConfig(mailbox_capacity=2))
    block = Block(gate=asyncio.Event())
    world.system.tell(probe(), block)
    await entered(block)  # taken out of the mailbox: in hand, not queued
    world.system.tell(probe(), Echo(1))
    world.system.tell(probe(), Echo(2))

    with pytest.raises(MailboxFull, match="full \\(2 messages\\)"):
        world.system.tell(probe(), Echo(3))
    with pytest.raises(MailboxFull):
        await world.system.ask(probe(), Echo(4))

    block.gate.set()
    await world.clock.settle()  # the backlog drains
    assert await world.system.ask(probe(), Echo(5)) == 5
    assert [e for e in world.journal if "got" in e] == ["a#1 got 1", "a#1 got 2", "a#1 got 5"]


# -- deactivation -------------------------------------------------------------------


async def test_idle_actor_is_deactivated_after_the_timeout_and_comes_back_fresh(
    world: World,
) -> None:
    world.add_kind(config=KindConfig(idle_timeout_s=10.0))
    await world.system.ask(probe(), Who())

    await world.clock.advance(6.0)
    await world.system.ask(probe(), Echo("keep alive"))  # restarts the idle count
    await world.clock.advance(9.999)
    assert world.system.is_active(probe())

    await world.clock.advance(0.001)
    assert world.journal[-1] == "a#1 deactivate idle"
    assert not world.system.is_active(probe())
    assert await world.system.ask(probe(), Who()) == 2


async def test_explicit_deactivate_waits_for_the_message_in_hand(world: World) -> None:
    world.add_kind()
    block = Block(gate=asyncio.Event())
    in_hand = asyncio.create_task(world.system.ask(probe(), block))
    await entered(block)
    queued = asyncio.create_task(world.system.ask(probe(), Echo("queued")))
    await world.clock.settle()

    leaving = asyncio.create_task(world.system.deactivate(probe(), "revoked"))
    await world.clock.settle()
    assert not leaving.done()
    with pytest.raises(ActorDeactivated, match="deactivated \\(revoked\\)"):
        await queued
    with pytest.raises(ActorDeactivated):
        world.system.tell(probe(), Echo("meanwhile"))

    block.gate.set()
    await in_hand
    await leaving
    assert world.journal[-2:] == ["a#1 unblocked", "a#1 deactivate revoked"]
    assert await world.system.ask(probe(), Who()) == 2


async def test_self_stop_deactivates_after_the_current_message(world: World) -> None:
    world.add_kind()
    assert await world.system.ask(probe(), StopSelf()) == "stopping"
    await world.clock.settle()

    assert world.journal[-1] == "a#1 deactivate stopped"
    assert await world.system.ask(probe(), Who()) == 2


async def test_a_failing_on_deactivate_is_logged_and_the_actor_removed(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add_kind(how=Behaviour(fail_deactivation=True))
    await world.system.ask(probe(), Who())

    await world.system.deactivate(probe(), "revoked")

    assert not world.system.is_active(probe())
    assert any("on_deactivate('revoked') failed" in r.getMessage() for r in caplog.records)


async def test_shutdown_deactivates_every_actor_then_refuses_messages() -> None:
    clock = FakeClock()
    world = World(system=ActorSystem(clock=clock), clock=clock)
    world.add_kind()
    world.add_kind("other")
    async with world.system:
        for grain in [probe("a"), probe("b"), GrainId(kind="other", key="c")]:
            await world.system.ask(grain, Who())

    assert sorted(e for e in world.journal if "deactivate" in e) == [
        "a#1 deactivate shutdown",
        "b#1 deactivate shutdown",
        "c#1 deactivate shutdown",
    ]
    assert world.system.active_grains() == []
    with pytest.raises(SystemStopped):
        world.system.tell(probe(), Echo(1))


async def test_shutdown_cancels_an_actor_that_overstays_the_grace_period() -> None:
    clock = FakeClock()
    world = World(system=ActorSystem(clock=clock, shutdown_grace_s=3.0), clock=clock)
    world.add_kind(how=Behaviour(hang_deactivation=True))
    await world.system.ask(probe(), Who())

    stopping = asyncio.create_task(world.system.stop())
    await clock.advance(2.9)
    assert not stopping.done()
    await clock.advance(0.1)
    await asyncio.wait_for(stopping, GUARD_S)

    assert world.journal[-2:] == ["a#1 deactivate shutdown", "a#1 cancelled"]
    assert world.system.active_grains() == []


# -- supervision --------------------------------------------------------------------


async def test_a_failing_receive_reaches_the_caller_and_the_next_message_gets_a_fresh_instance(
    world: World,
) -> None:
    world.add_kind()
    await world.system.ask(probe("other"), Echo("before"))
    block = Block(gate=asyncio.Event())
    world.system.tell(probe(), block)
    await entered(block)
    failing = asyncio.create_task(world.system.ask(probe(), Fail(ValueError("poison"))))
    behind = asyncio.create_task(world.system.ask(probe(), Who()))
    await world.clock.settle()

    block.gate.set()
    with pytest.raises(ValueError, match="poison"):
        await failing
    assert await behind == 2  # queued behind the failure: served by the next instance
    assert "a#1 deactivate failed" in world.journal
    assert await world.system.ask(probe("other"), Who()) == 1
    assert world.system.stats()["probe"].restarts == 1


async def test_a_failing_activation_reaches_the_caller_and_the_next_message_retries(
    world: World,
) -> None:
    world.add_kind(how=Behaviour(fail_activation={1}))

    with pytest.raises(RuntimeError, match="cannot load"):
        await world.system.ask(probe(), Who())
    assert await world.system.ask(probe(), Who()) == 2
    assert "a#1 deactivate failed" in world.journal


async def test_too_many_failures_quarantine_the_key_with_a_growing_capped_backoff(
    world: World,
) -> None:
    policy = RestartPolicy(
        max_restarts=2, restart_window_s=60.0, backoff_initial_s=10.0, backoff_max_s=25.0
    )
    world.add_kind(config=KindConfig(restart=policy))

    async def fail(text: str) -> None:
        with pytest.raises(ValueError, match=text):
            await world.system.ask(probe(), Fail(ValueError(text)))
        await world.clock.settle()

    for n in range(3):
        await fail(f"failure {n}")
    with pytest.raises(ActorUnavailable, match="quarantined") as unavailable:
        await world.system.ask(probe(), Who())
    assert unavailable.value.retry_after_s == pytest.approx(10.0)
    assert str(unavailable.value.last_error) == "failure 2"
    with pytest.raises(ActorUnavailable):
        world.system.tell(probe(), Who())
    assert world.system.stats()["probe"].quarantined == 1
    assert await world.system.ask(probe("healthy"), Who()) == 1

    await world.clock.advance(10.0)
    assert await world.system.ask(probe(), Who()) == 4

    retry_after = []
    for _ in range(3):  # still within the window: each new failure re-quarantines
        await fail("again")
        with pytest.raises(ActorUnavailable) as unavailable:
            world.system.tell(probe(), Who())
        retry_after.append(unavailable.value.retry_after_s)
        await world.clock.advance(unavailable.value.retry_after_s)
    assert retry_after == pytest.approx([20.0, 25.0, 25.0])


# -- timers -------------------------------------------------------------------------


async def test_a_scheduled_message_arrives_after_its_delay(world: World) -> None:
    world.add_kind()
    await world.system.ask(probe(), After(5.0, Echo("ring")))

    await world.clock.advance(4.9)
    assert "a#1 got ring" not in world.journal
    await world.clock.advance(0.1)
    assert world.journal[-1] == "a#1 got ring"


async def test_a_periodic_timer_ticks_until_deactivation_cancels_it(world: World) -> None:
    world.add_kind(config=KindConfig(idle_timeout_s=None))
    await world.system.ask(probe(), After(2.0, Echo("tick"), repeat=True))

    await world.clock.advance(2.0)
    await world.clock.advance(5.0)
    assert world.journal.count("a#1 got tick") == 3

    await world.system.deactivate(probe(), "revoked")
    assert world.clock.pending == 0
    await world.clock.advance(10.0)
    assert world.journal.count("a#1 got tick") == 3
    assert not world.system.is_active(probe())


async def test_a_cancelled_timer_delivers_nothing(world: World) -> None:
    actors: list[Probe] = []

    def factory(_key: str, context: ActorContext) -> Probe:
        actors.append(Probe(context=context, journal=world.journal, how=Behaviour()))
        return actors[-1]

    world.system.register("probe", factory)
    await world.system.ask(probe(), After(1.0, Echo("never")))
    actors[0].timers[0].cancel()

    await world.clock.advance(2.0)
    assert "a#1 got never" not in world.journal


# -- observability ------------------------------------------------------------------


async def test_stats_count_activations_messages_and_active_actors(world: World) -> None:
    world.add_kind()
    world.add_kind("other")
    for key in "abc":
        await world.system.ask(probe(key), Who())
    await world.system.deactivate(probe("c"))

    stats = world.system.stats()
    assert (stats["probe"].active, stats["probe"].activations, stats["probe"].messages) == (2, 3, 3)
    assert stats["other"].active == 0
    assert sorted(map(str, world.system.active_grains("probe"))) == ["probe/a", "probe/b"]
