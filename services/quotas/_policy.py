"""What a tenant may use: the operator's defaults, a tenant's overrides, the result.

Pure values: the API reads overrides with the tenant (one row, no extra query) and the
defaults from its settings; :func:`effective` puts them together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: The quotas' names, as settings (``WSCHED_QUOTA_<NAME>``), API fields and error details.
QUOTA_NAMES = ("max_pipelines", "max_backlog", "submit_rate", "submit_burst", "max_request_bytes")


@dataclass(frozen=True, kw_only=True)
class QuotaOverrides:
    """A tenant's own values; None: the operator's default."""

    max_pipelines: int | None = None
    max_backlog: int | None = None
    submit_rate: float | None = None
    submit_burst: int | None = None
    max_request_bytes: int | None = None

    def changed(self, **changes: int | float | None) -> QuotaOverrides:
        """These overrides with ``changes`` applied (None clears one)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class Quotas:
    """The values in force for one tenant; None: unbounded."""

    #: Live pipelines (those being deleted do not count).
    max_pipelines: int | None
    #: Tasks queued or scheduled over all the tenant's pipelines, as last flushed.
    max_backlog: int | None
    #: Tasks submitted per second (each task of a batch counts), refilling a bucket of
    #: ``submit_burst`` tasks.
    submit_rate: float | None
    submit_burst: int | None
    #: Bytes of one request body (never more than the process's own bound).
    max_request_bytes: int | None

    def burst(self) -> int:
        """The bucket's size: the burst, else one second of the rate (at least one task)."""
        if self.submit_burst is not None:
            return self.submit_burst
        return max(1, round(self.submit_rate or 1))


def effective(defaults: Quotas, overrides: QuotaOverrides) -> Quotas:
    """Each quota from the tenant's override if it has one, else the default."""
    values = {
        name: getattr(overrides, name)
        if getattr(overrides, name) is not None
        else getattr(defaults, name)
        for name in QUOTA_NAMES
    }
    return Quotas(**values)
