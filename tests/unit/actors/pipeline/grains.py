"""What the grain actor's unit tests share: a config source and new tasks."""

from __future__ import annotations

import datetime as dt
import hashlib

from actors.pipeline.model import NewTask, PipelineConfig


class Configs:
    """A ``ConfigSource`` answering every pipeline with the same settings."""

    def __init__(self, *, lease_timeout_s: float | None = None) -> None:
        self._lease_timeout_s = lease_timeout_s

    async def pipeline_config(self, pipeline_id: str) -> PipelineConfig | None:
        if self._lease_timeout_s is None:
            return PipelineConfig(pipeline_id=pipeline_id)
        return PipelineConfig(pipeline_id=pipeline_id, lease_timeout_s=self._lease_timeout_s)


def new_task(i: int, *, due_at: dt.datetime) -> NewTask:
    """Task ``t<i>`` with ``{}`` as its data, created when it is due."""
    data = b"{}"
    return NewTask(
        id=f"t{i}",
        data=data,
        data_sha256=hashlib.sha256(data).digest(),
        due_at=due_at,
        created_at=due_at,
    )
