"""The control store's side of tenants' quotas: what a tenant uses, and its shared bucket.

Usage is read from what exists anyway: live pipeline rows, and the counters the grains
flush into ``pipeline_stats`` (never a count over the tasks). The submit-rate bucket is
one row per tenant, drawn from in a short transaction that locks it (TiDB's pessimistic
``SELECT ... FOR UPDATE``), so concurrent draws of several API processes serialise.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from services.quotas import BucketState, Draw, draw, full
from services.store.control._base import StoreBase
from services.store.schema import pipeline_stats, pipelines, tenant_submit_buckets

#: The statuses that make a backlog: waiting to be dispatched, or to become due.
BACKLOG_STATUSES = ("queued", "scheduled")


class QuotaMethods(StoreBase):
    def count_live_pipelines(self, tenant_id: str) -> int:
        """The tenant's pipelines, those being deleted left out (their names are free)."""
        query = sa.select(sa.func.count()).where(
            pipelines.c.tenant_id == tenant_id, pipelines.c.live_name.is_not(None)
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def tenant_backlog(self, tenant_id: str) -> int:
        """Tasks queued or scheduled over the tenant's live pipelines, as last flushed."""
        query = (
            sa.select(pipeline_stats.c.counts_json)
            .select_from(
                pipeline_stats.join(pipelines, pipelines.c.id == pipeline_stats.c.pipeline_id)
            )
            .where(pipelines.c.tenant_id == tenant_id, pipelines.c.live_name.is_not(None))
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).scalars().all()
        total = 0
        for counts_json in rows:
            counts = json.loads(counts_json)
            total += sum(int(counts.get(status, 0)) for status in BACKLOG_STATUSES)
        return total

    def draw_submit_tokens(
        self, tenant_id: str, *, rate: float, burst: int, now_s: float, need: int, want: int
    ) -> Draw:
        """Take ``need`` to ``want`` tokens of the tenant's shared bucket, or none (see
        :func:`services.quotas.draw`); a tenant without a row starts with a full bucket."""
        table = tenant_submit_buckets
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(table.c.tokens, table.c.at_ms)
                .where(table.c.tenant_id == tenant_id)
                .with_for_update()
            ).first()
            if row is None:
                state = full(burst=burst, now_s=now_s)
            else:
                state = BucketState(tokens=row.tokens, at_s=row.at_ms / 1000)
            result = draw(state, rate=rate, burst=burst, now_s=now_s, need=need, want=want)
            values = {"tokens": result.state.tokens, "at_ms": round(result.state.at_s * 1000)}
            if row is None:
                # Two processes' first draws may race to create it: the loser's insert
                # fails on the key, and the caller's next draw finds the row.
                conn.execute(table.insert().values(tenant_id=tenant_id, **values))
            else:
                conn.execute(table.update().where(table.c.tenant_id == tenant_id).values(values))
        return result
