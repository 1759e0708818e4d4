"""``wsched chaos``, shortened: kill -9s of replicas, Kafka and TiDB lose no task.

The soak starts its own Kafka and TiDB (on data directories that survive a kill), not
the session's, because it kills them. The seed is fixed so that CI replays one fault
schedule; a failure names the seed and keeps the logs (``work_dir``). Every wait inside
is a polled condition with a deadline (the drain may take minutes on a busy machine);
the assertions are about counts, never about timings.
"""

from __future__ import annotations

import pytest

from services.chaos.soak import Options, render, run
from services.infra.cache import Cache

pytestmark = pytest.mark.integration

#: About 100 s of soak and a minute of start and stop on 2 cores.
SHORT = Options(tasks=10_000, replica_kills=5, rate=150, seed=20261126, drain_timeout_s=300)


@pytest.mark.timeout(600)
def test_a_short_soak_loses_no_task_and_no_fire_time(infra_cache: Cache) -> None:
    said: list[str] = []

    report = run(SHORT, cache=infra_cache, say=said.append)

    context = "\n".join([*said, render(report)])
    tasks = report["tasks"]
    assert tasks["accepted"] == SHORT.tasks, context
    assert tasks["lost"] == 0, context
    assert tasks["stuck"] == 0, context
    assert tasks["same_token_twice"] == 0, context
    assert tasks["succeeded"] + sum(tasks["other_terminal"].values()) == SHORT.tasks, context
    assert [run["ok"] for run in report["schedules"]] == [True] * SHORT.schedules, context
    assert report["stats_equal"], context
    assert report["ok"], context
