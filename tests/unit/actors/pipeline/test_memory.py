"""The in-memory store keeps the store contract (``tests/ports``), as the SQL one does."""

from __future__ import annotations

import pytest

from actors.pipeline.memory import InMemoryTaskStore
from tests.ports.task_store import (
    AttemptsContract,
    RetryPolicyContract,
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


class TestInMemoryTaskStore(
    TaskStoreContract, TimerContract, AttemptsContract, RetryPolicyContract
):
    @pytest.fixture
    def under_test(self) -> MemoryStoreUnderTest:
        return MemoryStoreUnderTest()
