"""The local deployer with real `wsched executor` and `wsched worker` processes.

No scheduler listens at the agents' address: they keep retrying, which is all these
tests need (the task path is covered by tests/e2e/test_dev_walkthrough.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.deploy.local import LocalDeployer, LocalOptions
from services.deploy.ports import DeployFailed
from services.deploy.processes import identity, read_record
from services.infra.process import free_port
from services.store.control import ControlStore, Pipeline
from tests.unit.services.deploy.conftest import new_pipeline


def options(data_dir: Path, **changes: float) -> LocalOptions:
    return LocalOptions(
        data_dir=data_dir,
        scheduler=f"127.0.0.1:{free_port()}",
        base_dir=Path("/nonexistent"),  # the tests give absolute chart paths
        max_agent_grace_s=1.0,
        executor_stop_s=2.0,
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture
async def deployer(tmp_path: Path, store: ControlStore) -> AsyncIterator[LocalDeployer]:
    async with LocalDeployer(
        options=options(tmp_path / "data"), token_of=store.worker_token
    ) as running:
        yield running


def alive(pid: int) -> bool:
    return identity(pid) is not None


async def gone(pids: list[int], timeout_s: float = 20) -> bool:
    async with asyncio.timeout(timeout_s):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.1)
    return True


def with_revision(pipeline: Pipeline, revision: int) -> Pipeline:
    from dataclasses import replace

    return replace(pipeline, deployment={"status": "deployed", "revision": revision})


async def test_deploy_runs_the_charts_executors_and_agents_and_remove_stops_them(
    deployer: LocalDeployer, store: ControlStore, tmp_path: Path
) -> None:
    pipeline, token = new_pipeline(store, scaling={"min_replicas": 2})
    status = await deployer.deploy(pipeline)
    assert (status.status, status.revision, status.deployer) == ("deployed", 1, "local")
    directory = tmp_path / "data" / "pipelines" / pipeline.id
    assert str(directory / "logs") in status.detail
    definition = json.loads((directory / "definition.json").read_text())
    assert definition["pipeline"][0]["commands"] == ["printf '%s' {{message}}"]
    recorded = read_record(directory)
    assert sorted(p.name for p in recorded) == ["agent-1", "agent-2", "executor-echo"]
    pids = deployer.running_pids(pipeline.id)
    assert sorted(pids) == sorted(p.pid for p in recorded) and all(alive(p) for p in pids)
    environ = Path(f"/proc/{recorded[-1].pid}/environ")
    agent_env = (await asyncio.to_thread(environ.read_bytes)).split(b"\0")
    assert f"WSCHED_WORKER_TOKEN={token}".encode() in agent_env
    assert f"WSCHED_WORKER_PIPELINE_ID={pipeline.id}".encode() in agent_env

    await deployer.remove(pipeline)
    assert await gone(pids)
    assert not directory.exists()
    await deployer.remove(pipeline)  # removing what is not there is not an error


async def test_deploy_is_idempotent_and_a_changed_spec_restarts_the_workers(
    deployer: LocalDeployer, store: ControlStore
) -> None:
    pipeline, _ = new_pipeline(store)
    first = await deployer.deploy(pipeline)
    pids = deployer.running_pids(pipeline.id)
    again = await deployer.deploy(with_revision(pipeline, first.revision))
    assert again.revision == first.revision
    assert deployer.running_pids(pipeline.id) == pids

    from dataclasses import replace

    changed = replace(with_revision(pipeline, first.revision), values={"agent": {"concurrency": 2}})
    second = await deployer.deploy(changed)
    assert second.revision == first.revision + 1
    assert await gone(pids)
    assert len(deployer.running_pids(pipeline.id)) == 2


async def test_a_chart_that_is_not_local_fails_the_deploy_clearly(
    deployer: LocalDeployer, store: ControlStore, tmp_path: Path
) -> None:
    pipeline, _ = new_pipeline(store, chart="oci://registry.example/charts/echo")
    with pytest.raises(DeployFailed, match="is not a local directory"):
        await deployer.deploy(pipeline)
    assert deployer.running_pids(pipeline.id) == []


async def test_a_pipeline_without_a_readable_token_fails_the_deploy_clearly(
    tmp_path: Path, store: ControlStore
) -> None:
    pipeline, _ = new_pipeline(store)

    def no_token(_: str) -> str:
        from services.store.control import TokenUnavailable

        raise TokenUnavailable("the key was changed")

    async with LocalDeployer(options=options(tmp_path), token_of=no_token) as deployer:
        with pytest.raises(DeployFailed, match="without the worker token: the key was changed"):
            await deployer.deploy(pipeline)


async def test_leaving_stops_everything_and_the_next_owner_stops_what_a_crash_left(
    tmp_path: Path, store: ControlStore
) -> None:
    first, _ = new_pipeline(store, "first")
    second, _ = new_pipeline(store, "second")
    data = tmp_path / "data"
    async with LocalDeployer(options=options(data), token_of=store.worker_token) as owner:
        await owner.deploy(first)
        pids = owner.running_pids(first.id)
    assert await gone(pids)
    assert read_record(data / "pipelines" / first.id) == []

    crashed = LocalDeployer(options=options(data), token_of=store.worker_token)
    await crashed.deploy(second)  # never closed: as if the API had been killed
    left = crashed.running_pids(second.id)
    async with LocalDeployer(options=options(data), token_of=store.worker_token):
        assert await gone(left, timeout_s=5)  # stopped on entering, before anything else
    await crashed.close()  # only reaps them: this test process is their parent


async def test_a_process_that_dies_is_started_again(tmp_path: Path, store: ControlStore) -> None:
    pipeline, _ = new_pipeline(store)
    watched = options(tmp_path, watch_interval_s=0.2)
    async with LocalDeployer(options=watched, token_of=store.worker_token) as deployer:
        await deployer.deploy(pipeline)
        [executor] = [
            p for p in read_record(tmp_path / "pipelines" / pipeline.id) if p.role == "executor"
        ]
        os.kill(executor.pid, signal.SIGKILL)
        async with asyncio.timeout(20):
            while True:
                restarted = [
                    p
                    for p in read_record(tmp_path / "pipelines" / pipeline.id)
                    if p.role == "executor" and p.pid != executor.pid
                ]
                if restarted and alive(restarted[0].pid):
                    break
                await asyncio.sleep(0.1)
