"""Carries out tenant deletions the operator started: the tenant's pipelines are deleted
as any pipeline is (the reconciler's own steps: grain, workers, topic, tasks), then its
namespace is removed, then its rows.

Each pass starts from what the database says (``tenant_deletions``) and records how far
it got, so a crash anywhere is resumed by the next pass (one at start-up, then with
the reconciler's periodic scan) and a second API process doing the same harms nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.api.context import DatabaseUnavailable, in_thread
from services.deploy.ports import Deployer
from services.store.control import (
    STEP_NAMESPACE,
    STEP_PIPELINES,
    ControlStore,
    TenantDeletion,
)

log = logging.getLogger("wsched.api.tenant_deletion")
T = TypeVar("T")


async def guarded(work: Awaitable[None], what: str) -> None:
    """Run one pass of the reconciler's work; its failure is logged, never raised, so that
    one pipeline's or tenant's trouble cannot stop the others (the next pass retries)."""
    try:
        await work
    except DatabaseUnavailable as err:
        log.warning("%s waits for the database: %s", what, err)
    except Exception:
        log.exception("%s failed unexpectedly", what)


async def pending_ids(
    read: Callable[[], list[T]], id_of: Callable[[T], str], *, what: str
) -> list[str]:
    """The ids of what ``read`` lists as work left; none while the database is away (the
    next pass asks again)."""
    try:
        pending = await in_thread(read)
    except DatabaseUnavailable as err:
        log.warning("reconciler: cannot list %s, retrying next pass: %s", what, err)
        return []
    return [id_of(item) for item in pending]


class TenantDeleter:
    def __init__(
        self,
        *,
        store: ControlStore,
        deployer: Deployer,
        reconcile: Callable[[str], Awaitable[None]],
    ) -> None:
        """``reconcile``: the reconciler's pass over one pipeline (deletes a deleting one)."""
        self._store = store
        self._deployer = deployer
        self._reconcile = reconcile
        self._running: dict[str, asyncio.Task[None]] = {}

    def nudge(self, tenant_id: str) -> None:
        """Carry the tenant's deletion on soon (unless a pass is under way)."""
        if tenant_id not in self._running:
            self._running[tenant_id] = asyncio.create_task(self._logged(tenant_id))

    async def scan(self) -> None:
        pending = await pending_ids(
            self._store.pending_tenant_deletions,
            lambda deletion: deletion.tenant_id,
            what="tenant deletions",
        )
        for tenant_id in pending:
            self.nudge(tenant_id)

    async def idle(self) -> None:
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    def cancel(self) -> list[asyncio.Task[None]]:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        return tasks

    async def _logged(self, tenant_id: str) -> None:
        try:
            await guarded(self.carry_on(tenant_id), f"tenant {tenant_id}: deletion")
        finally:
            self._running.pop(tenant_id, None)

    async def carry_on(self, tenant_id: str) -> None:
        """One pass: as far as the deletion goes now; what is left waits for the next."""
        deletion = await in_thread(self._store.tenant_deletion, tenant_id)
        if deletion is None:
            return
        if deletion.step == STEP_PIPELINES and not await self._pipelines_gone(deletion):
            return
        deletion = await in_thread(self._store.tenant_deletion, tenant_id)
        if deletion is not None and deletion.step == STEP_NAMESPACE:
            await self._remove_namespace(deletion)

    async def _pipelines_gone(self, deletion: TenantDeletion) -> bool:
        tenant_id = deletion.tenant_id
        left = await in_thread(self._store.delete_tenant_pipelines, tenant_id)
        await in_thread(
            self._store.note_tenant_deletion,
            tenant_id,
            step=STEP_PIPELINES,
            pipelines_left=len(left),
        )
        for pipeline_id in left:
            await self._reconcile(pipeline_id)
        still = await in_thread(self._store.delete_tenant_pipelines, tenant_id)
        if still:
            reason = await self._first_reason(still)
            await in_thread(
                self._store.note_tenant_deletion,
                tenant_id,
                step=STEP_PIPELINES,
                pipelines_left=len(still),
                detail=reason,
            )
            log.warning("tenant %s: %d pipelines left: %s", tenant_id, len(still), reason)
            return False
        await in_thread(
            self._store.note_tenant_deletion, tenant_id, step=STEP_NAMESPACE, pipelines_left=0
        )
        return True

    async def _first_reason(self, pipeline_ids: list[str]) -> str:
        for pipeline_id in pipeline_ids:
            pipeline = await in_thread(self._store.pipeline_by_id, pipeline_id)
            if pipeline is not None and pipeline.state_reason:
                return f"pipeline {pipeline.name}: {pipeline.state_reason}"
        return "pipelines are still being deleted"

    async def _remove_namespace(self, deletion: TenantDeletion) -> None:
        try:
            await self._deployer.remove_tenant(deletion.namespace)
        except Exception as err:  # noqa: BLE001 - the cluster's; shown, retried next pass
            reason = str(err) or type(err).__name__
            log.warning("tenant %s: namespace not removed: %s", deletion.tenant_id, reason)
            await in_thread(
                self._store.note_tenant_deletion,
                deletion.tenant_id,
                step=STEP_NAMESPACE,
                detail=f"namespace {deletion.namespace}: {reason[:1000]}",
            )
            return
        await in_thread(self._store.finish_tenant_deletion, deletion.tenant_id)
        log.info("tenant %s (%s) deleted", deletion.name, deletion.tenant_id)
