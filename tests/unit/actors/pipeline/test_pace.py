"""When a grain changes pace: slow after a quiet spell, fast at its first work."""

from __future__ import annotations

from actors.pipeline.pace import Pace


def test_a_grain_slows_down_only_after_a_quiet_spell() -> None:
    pace = Pace(idle_after_s=5.0)
    assert not pace.observe(tickless=True, now=10.0)
    assert not pace.observe(tickless=True, now=14.9)
    assert pace.observe(tickless=True, now=15.0) and pace.slow
    assert not pace.observe(tickless=True, now=60.0) and pace.slow


def test_work_during_the_quiet_spell_starts_it_again() -> None:
    pace = Pace(idle_after_s=5.0)
    pace.observe(tickless=True, now=0.0)
    pace.observe(tickless=False, now=4.0)
    assert not pace.observe(tickless=True, now=6.0)
    assert not pace.observe(tickless=True, now=10.9)
    assert pace.observe(tickless=True, now=11.0)


def test_work_brings_the_fast_pace_back_at_once() -> None:
    pace = Pace(idle_after_s=5.0, slow=True)
    assert pace.observe(tickless=False, now=100.0) and not pace.slow
    assert not pace.observe(tickless=False, now=100.5)
    assert not pace.observe(tickless=True, now=101.0)
    assert pace.observe(tickless=True, now=106.0) and pace.slow
