"""The in-memory store keeps the store contract (``tests/ports``), as the SQL one does."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from actors.pipeline.memory import InMemoryTaskStore
from actors.pipeline.model import GrainKey
from actors.pipeline.schedules import ScheduleSpec
from tests.ports.task_store import (
    PIPELINE,
    AttemptsContract,
    RetryPolicyContract,
    ScheduleContract,
    StoredTask,
    TaskStoreContract,
    TimerContract,
    stored,
)


class MemoryStoreUnderTest:
    def __init__(self) -> None:
        self.store = InMemoryTaskStore()

    async def tasks(self) -> dict[str, StoredTask]:
        return {task_id: stored(row) for (_, task_id), row in self.store.rows.items()}

    async def results(self) -> list[tuple[str, bytes]]:
        return sorted((task_id, result) for (_, task_id), result in self.store.results.items())

    async def attempts(self) -> list[tuple[str, int, str, str | None]]:
        kept = self.store.attempts.values()
        return sorted((a.task_id, a.attempt, a.outcome, a.error) for a in kept)

    async def define_schedule(self, *, schedule_id: str, version: int, doc: dict[str, Any]) -> None:
        spec = ScheduleSpec.from_doc(
            id=schedule_id, name=schedule_id, version=version, paused=False, doc=doc
        )
        self.store.schedules.setdefault(PIPELINE, {})[schedule_id] = spec

    async def wake_ups(self) -> dict[GrainKey, dt.datetime]:
        return dict(self.store.wakeups)


class TestInMemoryTaskStore(
    TaskStoreContract, TimerContract, AttemptsContract, RetryPolicyContract, ScheduleContract
):
    @pytest.fixture
    def under_test(self) -> MemoryStoreUnderTest:
        return MemoryStoreUnderTest()
