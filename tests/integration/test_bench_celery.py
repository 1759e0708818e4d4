"""``wsched bench-celery`` at a small size against a real Redis and a real prefork worker.

Every task's result must arrive and every figure must be positive and agree with the
others; none is compared with a target (timings belong in the benchmark's output).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.bench.celery_side import run
from services.bench.measure import descendants

pytestmark = pytest.mark.integration

TASKS = 500


def _ours_left_running() -> list[str]:
    """Redis servers and Celery processes of this run still alive below this process."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "redis-server" in argv or "services.bench.celery_app" in argv:
            found.append(argv)
    return found


@pytest.mark.timeout(600)
def test_both_setups_deliver_every_result_with_consistent_figures() -> None:
    said: list[str] = []

    report = run(tasks=TASKS, say=said.append)

    assert json.loads(json.dumps(report)) == report
    assert set(report["setups"]) == {"a", "b"}
    for key, setup in report["setups"].items():
        assert setup["tasks"] == setup["results_succeeded"] == TASKS, key
        assert setup["e2e_tasks_per_s"] > 0 and setup["submit_tasks_per_s"] > 0, key
        assert setup["e2e_tasks_per_s"] == pytest.approx(TASKS / setup["e2e_s"], rel=0.02)
        assert setup["e2e_s"] > 0 and setup["submit_s"] > 0, key
        cpu = setup["cpu_s_per_1000_tasks"]
        assert set(cpu) == {"client", "worker", "redis", "total"}, key
        assert all(value > 0 for value in cpu.values()), (key, cpu)
        assert cpu["total"] == pytest.approx(cpu["client"] + cpu["worker"] + cpu["redis"], abs=0.01)
    assert report["setups"]["b"]["config"]["task_acks_late"] is True
    assert "appendfsync everysec" in report["setups"]["b"]["config"]["redis"]
    assert report["workload"]["concurrency"] == 2 * (os.cpu_count() or 1)
    assert report["versions"]["celery"].startswith("5.")
    assert report["machine"]["cores"] >= 1
    assert len(said) == 2
    assert _ours_left_running() == []
