"""The bench client's bodies: 100-byte tasks, and due times spread in submit order."""

from __future__ import annotations

import datetime as dt
import itertools
import json

from services.bench.client import TASK_DATA_BYTES, Due, batch_body


def test_tasks_are_100_bytes_and_due_at_once_by_default() -> None:
    body = json.loads(batch_body(0, 3))
    assert [len(json.dumps(t["data"], separators=(",", ":"))) for t in body["tasks"]] == [
        TASK_DATA_BYTES
    ] * 3
    assert all("run_at" not in t for t in body["tasks"])


def test_delayed_tasks_are_spread_evenly_from_first_to_last() -> None:
    due = Due(first_unix=1_800_000_000.0, last_unix=1_800_000_600.0, tasks=7)
    body = json.loads(batch_body(0, 7, due=due))
    times = [dt.datetime.fromisoformat(t["run_at"]).timestamp() for t in body["tasks"]]
    assert times[0] == 1_800_000_000.0
    assert times[-1] == 1_800_000_600.0
    assert [b - a for a, b in itertools.pairwise(times)] == [100.0] * 6
    later = json.loads(batch_body(3, 2, due=due))
    assert [t["run_at"] for t in later["tasks"]] == [t["run_at"] for t in body["tasks"][3:5]]
