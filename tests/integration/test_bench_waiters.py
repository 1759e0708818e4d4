"""``wsched bench-waiters`` with a few waiters over the session's Kafka and TiDB: the
machinery works and every figure is there (none is compared with a target)."""

from __future__ import annotations

import pytest

from services.bench import waiters
from services.bench.system import Components
from services.infra.cache import Cache
from services.infra.kafka import KafkaBroker
from services.infra.tidb import TidbServer

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_small_waiters_bench_reports_every_figure(
    kafka_broker: KafkaBroker, tidb_server: TidbServer, infra_cache: Cache
) -> None:
    components = Components(bootstrap=kafka_broker.bootstrap, tidb_root_url=tidb_server.url())
    report = waiters.run(
        waiters.Options(waiters=20, rate=100),
        cache=infra_cache,
        say=lambda _text: None,
        components=components,
    )
    assert report["waiters"] == 20
    assert report["answered_succeeded"] == 20
    for figure in ("added_p50_ms", "added_p99_ms", "server_lag_p99_ms", "event_lag_p99_ms"):
        assert report[figure] >= 0, figure
    assert report["api_cpu_percent"] >= 0
    assert "load_average_1m" in report["machine"]
