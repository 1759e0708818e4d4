"""``wsched bench-worker`` with a few tasks over the session's Kafka and TiDB: the real
agent and executor run both pipelines to the end and every figure is there (none is
compared with a target)."""

from __future__ import annotations

import pytest

from services.bench import worker_path
from services.bench.system import Components
from services.infra.cache import Cache
from services.infra.kafka import KafkaBroker
from services.infra.tidb import TidbServer

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_small_worker_bench_runs_both_pipelines_and_reports_every_figure(
    kafka_broker: KafkaBroker, tidb_server: TidbServer, infra_cache: Cache
) -> None:
    components = Components(bootstrap=kafka_broker.bootstrap, tidb_root_url=tidb_server.url())
    report = worker_path.run(
        worker_path.Options(tasks=200, concurrency=8, timeout_s=240),
        cache=infra_cache,
        say=lambda _text: None,
        components=components,
    )
    for kind in ("shell", "python"):
        figures = report[kind]
        for phase in ("cold", "warm"):
            assert figures[phase]["tasks"] == 200
            assert figures[phase]["tasks_per_s"] > 0
            assert 0 < figures[phase]["first_success_s"] <= figures[phase]["seconds"]
        cpu = figures["warm_cpu_s_per_1000_tasks"]
        # The agent and the executor did work for these tasks: their CPU cannot be 0.
        assert cpu["agent"] > 0, cpu
        assert cpu["executor"] > 0, cpu
        assert set(cpu) == {"agent", "executor", "scheduler", "api"}
        # 200 tasks reported done were made durable by at least one flush and transaction.
        writes = figures["warm_writes_per_1000_tasks"]
        assert writes["flushes"] > 0, writes
        assert writes.get("tidb_transactions", 1) > 0, writes
    assert "load_average_1m" in report["machine"]
