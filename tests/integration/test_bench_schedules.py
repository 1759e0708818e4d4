"""``wsched bench-schedules`` in quick mode over the session's Kafka and TiDB: the
machinery works and every figure is there (none is compared with a target)."""

from __future__ import annotations

import json

import pytest

from services.bench import triggers
from services.bench.system import Components
from services.infra.cache import Cache
from services.infra.kafka import KafkaBroker
from services.infra.tidb import TidbServer

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_quick_schedule_bench_reports_every_figure(
    kafka_broker: KafkaBroker, tidb_server: TidbServer, infra_cache: Cache
) -> None:
    options = triggers.Options.build(schedules=None, quick=True)
    components = Components(bootstrap=kafka_broker.bootstrap, tidb_root_url=tidb_server.url())
    said: list[str] = []

    report = triggers.run(options, cache=infra_cache, say=said.append, components=components)

    assert json.loads(json.dumps(report, default=str))["admission"]
    admission, dispatch = report["admission"], report["dispatch"]
    assert admission["triggers_per_s"] > 0
    assert admission["admitted_of_due"] > 0
    assert admission["trigger_lateness_ms"]["p99"] is not None
    assert admission["scheduler_rss_mb"] > 0
    assert dispatch["dispatched_of_due"] > 0
    assert dispatch["dispatch_lateness_ms"]["p99"] is not None
    delayed = report["delayed"]
    assert delayed["tasks"] == 2000
    assert 0 < delayed["started"] <= delayed["counted"] <= 2000
    assert delayed["start_lateness_ms"]["p99"] is not None
    late = delayed["late_over_1s_by_window"]
    assert sum(window["late_over_1s"] for window in late) <= delayed["started"]
    assert all(window["max_ms"] > 1000 and window["from_s"] % 10 == 0 for window in late)
    # Read from TiDB's own table (None would mean it could not be read).
    assert isinstance(delayed["tidb_analyze_jobs"], list)
    text = triggers.render(report)
    assert "triggers admitted/s" in text and "Dapr" in text
