"""``wsched bench`` in quick mode over the session's Kafka and TiDB: the machinery works.

Every figure must be present and sane; none is compared with a target (timings belong in
the benchmark's output, never in a pass/fail test).
"""

from __future__ import annotations

import json

import pytest

from services.bench.report import FIGURES
from services.bench.run import run
from services.bench.system import Components, Options
from services.infra.cache import Cache
from services.infra.kafka import KafkaBroker
from services.infra.tidb import TidbServer

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_quick_bench_reports_every_figure(
    kafka_broker: KafkaBroker, tidb_server: TidbServer, infra_cache: Cache
) -> None:
    options = Options.build(tasks=2000, workers=2, backlog=5000, quick=True)
    components = Components(
        bootstrap=kafka_broker.bootstrap,
        tidb_root_url=tidb_server.url(),
        tidb_metrics=f"http://127.0.0.1:{tidb_server.status_port}/metrics",
    )
    said: list[str] = []

    report = run(options, cache=infra_cache, say=said.append, components=components)

    assert json.loads(json.dumps(report)) == report
    for key, _ in FIGURES:
        value = report[key]
        assert isinstance(value, int | float) and value > 0, (key, value)
    details = report["details"]
    assert details["throughput"]["tasks_succeeded"] == 2000
    assert details["paced"]["tasks"] == 2000
    for phase in ("throughput", "paced"):
        writes, first = details[phase]["tidb_writes"], details[phase]["first_writes"]
        # Each task got its row one way: at admission, or held in memory (the write
        # delay, on by default) and then written once at its end or pinned before it.
        assert sum(first.values()) == 2000, (phase, first)
        # TiDB's own account: each task is at least its row and index entries, in far
        # fewer transactions than tasks.
        assert writes["kv_writes_per_task"] >= 2, (phase, writes)
        assert writes["bytes_written_per_task"] > 100, (phase, writes)
        assert 0 < writes["transactions_per_1000_tasks"] < 1000, (phase, writes)
    # At half the peak the window has room: most tasks are written once, at their end.
    assert details["paced"]["first_writes"]["held_written_once"] > 1000
    backlog = details["backlog"]
    # Behind a backlog a task is written at admission, and again when it ends.
    assert backlog["tidb_writes_at_admission"]["kv_writes_per_task"] >= 2
    assert backlog["drain"]["tasks_succeeded"] >= 500
    assert backlog["drain"]["tidb_writes"]["kv_writes_per_task"] > 0
    assert details["backlog"]["grain_backlog"] == 5000
    assert report["fraction_of_floor"] == pytest.approx(
        report["e2e_tasks_per_s"] / report["floor_tasks_per_s"], rel=0.01
    )
    assert report["machine"]["cores"] >= 1 and report["versions"]["kafka"]
    assert any("backlog" in line for line in said)
