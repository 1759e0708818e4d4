"""``wsched bench-idle`` with a few shared pipelines over the session's Kafka and TiDB,
resting grains woken for their delayed tasks and the takeover after a SIGKILL included:
the machinery works and every figure is there (none is compared with a target)."""

from __future__ import annotations

import pytest

from services.bench import idle
from services.bench.system import Components
from services.infra.cache import Cache
from services.infra.kafka import KafkaBroker
from services.infra.tidb import TidbServer

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
def test_a_small_idle_bench_with_a_failover_reports_every_figure(
    kafka_broker: KafkaBroker, tidb_server: TidbServer, infra_cache: Cache
) -> None:
    components = Components(
        bootstrap=kafka_broker.bootstrap,
        tidb_root_url=tidb_server.url(),
        pids={"kafka": kafka_broker.pid or 0, "tidb": tidb_server.pid or 0},
    )
    report = idle.run(
        idle.Options(
            pipelines=6, measure_s=1, idle_timeout_s=1, failover=True, timers=True, wake_margin_s=5
        ),
        cache=infra_cache,
        say=lambda _text: None,
        components=components,
    )
    assert report["workload"]["topic"] == "shared"
    assert report["with_pipelines"]["active_grains"] == 0
    assert report["with_pipelines"]["scheduler_rss_mb"] > 0
    timers = report["with_timers"]
    assert timers["still_active"] == 0 and timers["idle"]["scheduler_rss_mb"] > 0
    # Every task handed out, none before its due time (the figures' bounds are the bench's).
    assert timers["lateness"]["handed_out"] == 6 and timers["lateness"]["early_ms"] >= 0
    failover = report["failover"]
    assert 0 < failover["pipelines_moved"] <= 6
    assert failover["all_polled_s"] >= failover["all_hosted_s"] > 0
    assert failover["poll_rounds"] >= 1
    assert report["one_task_each"]["all_admitted_s"] > 0
