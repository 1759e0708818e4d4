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
    # TiDB's own account: each task is at least its row and index entries, written twice
    # (admitted, then ended), in far fewer transactions than tasks.
    for phase in ("throughput", "paced"):
        writes = details[phase]["tidb_writes"]
        assert writes["kv_writes_per_task"] >= 4, (phase, writes)
        assert writes["bytes_written_per_task"] > 100, (phase, writes)
        assert 0 < writes["transactions_per_1000_tasks"] < 1000, (phase, writes)
    assert details["backlog"]["grain_backlog"] == 5000
    assert report["fraction_of_floor"] == pytest.approx(
        report["e2e_tasks_per_s"] / report["floor_tasks_per_s"], rel=0.01
    )
    assert report["machine"]["cores"] >= 1 and report["versions"]["kafka"]
    assert any("backlog" in line for line in said)
