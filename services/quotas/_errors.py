"""The one failure the quota ports report."""

from __future__ import annotations


class QuotaStoreUnavailable(Exception):
    """The database behind the shared buckets or the backlog cannot be reached."""
