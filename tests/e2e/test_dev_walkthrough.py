"""README's "Try it", as a newcomer follows it: `wsched dev`, then the CLI.

`wsched dev` runs from the repository root, so the README's relative chart path
`charts/examples/echo` works as written; the API runs the chart's executor and agent as
local processes, and Ctrl-C stops every one of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.deploy.processes import identity, read_record
from services.infra.process import free_port, free_port_pair, port_open

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Dev:
    api: str
    http_port: int
    kafka_port: int
    data_dir: Path


#: The walkthrough relies on their defaults, whatever this machine's environment says.
_DEFAULTED = {
    "WSCHED_KAFKA_BOOTSTRAP",
    "WSCHED_DATABASE_URL",
    "WSCHED_DEPLOYER",
    "WSCHED_OPERATOR_KEY",
    "WSCHED_SECRET_KEY",
    "WSCHED_API_KEY",
}


def _env(dev: Dev) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _DEFAULTED}
    return {**env, "WSCHED_DATA_DIR": str(dev.data_dir), "WSCHED_API_URL": dev.api}


@contextmanager
def wsched_dev(tmp_path: Path) -> Iterator[Dev]:
    http_port = free_port()
    dev = Dev(
        api=f"http://127.0.0.1:{http_port}",
        http_port=http_port,
        kafka_port=free_port_pair(),
        data_dir=tmp_path / "data",
    )
    env = {
        **_env(dev),
        "WSCHED_HTTP_PORT": str(dev.http_port),
        "WSCHED_GRPC_PORT": str(free_port()),
        "WSCHED_METRICS_PORT": str(free_port()),
        "WSCHED_DEV_KAFKA_PORT": str(dev.kafka_port),
        "WSCHED_DEV_BROKER": "kafka",
    }
    out_path = tmp_path / "dev.out"
    with out_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "dev"], cwd=REPO, env=env, stdout=out, stderr=out
        )
        try:
            _wait_ready(f"{dev.api}/readyz", proc, out_path)
            yield dev
        finally:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            code = proc.wait(timeout=90)
    assert code == 0, out_path.read_text()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], out: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"wsched dev exited during start-up:\n{out.read_text()}"
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within 120 s:\n{out.read_text()}")


def wsched(dev: Dev, *args: str, key: str = "") -> Any:
    """A CLI command as the README shows it; its JSON output."""
    env = {**_env(dev), "COLUMNS": "200"}
    if key:
        env["WSCHED_API_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"wsched {' '.join(args)}:\n{done.stderr}{done.stdout}"
    return json.loads(done.stdout)


def worker_pids(dev: Dev, pipeline_id: str) -> list[int]:
    recorded = read_record(dev.data_dir / "pipelines" / pipeline_id)
    assert {p.role for p in recorded} == {"agent", "executor"}, recorded
    return [p.pid for p in recorded]


def injections(marker: Path) -> dict[str, str]:
    """Messages that would create ``marker`` if any part of them ran as a command."""
    return {
        "subshell": f"$(touch {marker})",
        "backticks": f"`touch {marker}`",
        "semicolon": f"'; touch {marker}; echo '",
        "quotes": f'x" && touch {marker} && echo "x',  # not JSON: the API shows it as text
        "newline": f"line one\ntouch {marker}",
        "pipe": f"x | touch {marker}",
    }


def test_the_readme_walkthrough_finishes_tasks_with_local_workers(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with wsched_dev(tmp_path) as dev:
        key = wsched(dev, "tenants", "create", "acme")["api_key"]
        wsched(dev, "apps", "create", "shop", key=key)
        created = wsched(
            dev, "pipelines", "create", "shop", "echo", "--chart", "charts/examples/echo", key=key
        )
        assert created["state"] == "ready"
        shown = wsched(dev, "pipelines", "get", "shop", "echo", key=key)
        assert shown["deployment"]["deployer"] == "local", shown
        pids = worker_pids(dev, created["id"])

        messages = {"first": "hello", **injections(marker)}
        for task_id, message in messages.items():
            data = json.dumps({"message": message})
            queued = wsched(dev, "tasks", "submit", "shop", "echo", data, "--id", task_id, key=key)
            assert queued == {"id": task_id, "status": "queued"}
        counts = wsched(
            dev, "tasks", "watch", "shop", "echo", "--until-done", "--interval-s", "0.5", key=key
        )
        assert counts.get("succeeded") == len(messages), counts

        for task_id, message in messages.items():
            task = wsched(dev, "tasks", "get", "shop", "echo", task_id, key=key)
            assert task["status"] == "succeeded", task
            assert (task["result"], task["result_encoding"]) == (message, "text"), task
        assert not marker.exists(), "task data ran as a command"
        assert all(identity(pid) for pid in pids), "a worker process died"

    assert not port_open(dev.http_port), "the API still answers after Ctrl-C"
    assert not port_open(dev.kafka_port), "the broker still answers after Ctrl-C"
    left = [pid for pid in pids if identity(pid) is not None]
    assert left == [], f"worker processes left after Ctrl-C: {left}"
