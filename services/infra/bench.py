"""Figures for the provisioned components: warm provisioning, start-up time, idle memory.

``make bench`` prints them as JSON; cold build figures come from the records written
when each component was first built (``wsched infra status``).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from services.infra import helm, kafka, kube, registry, tidb
from services.infra.cache import Cache
from services.infra.process import rss_mb


def children_rss_mb() -> float:
    """Resident memory of this process's direct children, from /proc."""
    me = str(os.getpid())
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if parent == me:
            total += rss_mb(int(stat.parent.name))
    return total


def _timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return round(time.monotonic() - started, 2)


def _startup(starter: Callable[[], AbstractContextManager[Any]]) -> dict[str, float]:
    started = time.monotonic()
    with starter():
        seconds = time.monotonic() - started
        time.sleep(2)  # let start-up allocations settle before reading RSS
        return {"start_s": round(seconds, 2), "idle_rss_mb": round(children_rss_mb())}


class _Running:
    def __init__(self, start: Callable[[], None], stop: Callable[[], None]) -> None:
        self._start, self._stop = start, stop

    def __enter__(self) -> None:
        self._start()

    def __exit__(self, *_: object) -> None:
        self._stop()


def run(cache: Cache) -> dict[str, Any]:
    warm = {
        "kafka": _timed(lambda: kafka.provision(cache)),
        "tidb": _timed(lambda: tidb.provision(cache)),
        "helm": _timed(lambda: helm.provision(cache)),
        "kube": _timed(lambda: kube.provision(cache)),
        "registry": _timed(lambda: registry.provision(cache)),
    }
    with tempfile.TemporaryDirectory() as scratch:
        broker = kafka.KafkaBroker(libs=kafka.provision(cache), data_dir=Path(scratch) / "kafka")
        server = tidb.TidbServer(binary=tidb.provision(cache))
        cluster = kube.KubeCluster(binaries=kube.provision(cache))
        startup = {
            "kafka": _startup(lambda: _Running(broker.start, broker.stop)),
            "tidb": _startup(lambda: _Running(server.start, server.stop)),
            "kube": _startup(lambda: _Running(cluster.start, cluster.stop)),
        }
    return {"warm_provision_s": warm, "startup": startup, "cold_build": cache.records()}
