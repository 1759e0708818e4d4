"""The quotas in force: a tenant's override wins, else the operator's default."""

from __future__ import annotations

from services.quotas import QuotaOverrides, Quotas, effective

DEFAULTS = Quotas(
    max_pipelines=10,
    max_backlog=1000,
    submit_rate=50.0,
    submit_burst=None,
    max_request_bytes=None,
)


def test_without_overrides_the_defaults_hold() -> None:
    assert effective(DEFAULTS, QuotaOverrides()) == DEFAULTS


def test_an_override_replaces_its_default_only() -> None:
    mine = effective(DEFAULTS, QuotaOverrides(max_backlog=5, submit_burst=7))
    assert (mine.max_backlog, mine.submit_burst) == (5, 7)
    assert (mine.max_pipelines, mine.submit_rate) == (10, 50.0)


def test_the_burst_defaults_to_one_second_of_the_rate() -> None:
    assert DEFAULTS.burst() == 50
    assert effective(DEFAULTS, QuotaOverrides(submit_rate=0.2)).burst() == 1
    assert effective(DEFAULTS, QuotaOverrides(submit_burst=3)).burst() == 3


def test_changed_sets_and_clears_overrides() -> None:
    overrides = QuotaOverrides(max_pipelines=3).changed(max_backlog=9, max_pipelines=None)
    assert overrides == QuotaOverrides(max_backlog=9)
