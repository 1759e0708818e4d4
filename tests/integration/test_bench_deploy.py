"""``wsched bench-deploy`` on the session's kube-apiserver: the machinery works.

Every figure must be present and sane; none is compared with a target (timings belong in
the benchmark's output, never in a pass/fail test).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.bench.deploy import run
from services.infra.cache import Cache
from services.infra.kube import KubeCluster

pytestmark = pytest.mark.integration


def test_the_deploy_bench_reports_every_figure(
    kube_cluster: KubeCluster, helm_bin: Path, infra_cache: Cache
) -> None:
    said: list[str] = []
    report = run(infra_cache, pipelines=2, say=said.append, cluster=kube_cluster)

    assert json.loads(json.dumps(report)) == report
    assert report["pipelines"] == 2
    for phase in ("install_s", "upgrade_s", "drift_check_s", "uninstall_s"):
        figures = report[phase]
        assert 0 < figures["p50"] <= figures["max"], (phase, figures)
    concurrent = report["install_concurrent"]
    assert concurrent["wall_s"] > 0 and concurrent["pipelines_per_min"] > 0
    assert report["scaler_round_changing_s"] > 0 and report["scaler_round_steady_s"] > 0
    assert any("scaler round" in line for line in said)
