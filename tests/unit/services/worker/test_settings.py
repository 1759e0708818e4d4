"""The agent's and the executor's settings from WSCHED_WORKER_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.worker.settings import ExecutorSettings, WorkerSettings, parse_executors


def test_the_agent_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WSCHED_WORKER_SCHEDULER": "a:1, b:2",
        "WSCHED_WORKER_PIPELINE_ID": "p-1",
        "WSCHED_WORKER_TOKEN": "wst_secret",
        "WSCHED_WORKER_DEFINITION": "/etc/pipeline.json",
        "WSCHED_WORKER_EXECUTORS": "echo=unix:///tmp/x/echo.sock, wget=127.0.0.1:7001",
        "WSCHED_WORKER_CONCURRENCY": "8",
        "WSCHED_WORKER_WORKDIR": "/mnt/pipe",
    }.items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings()  # type: ignore[call-arg]
    assert settings.scheduler_addresses() == ["a:1", "b:2"]
    assert settings.executor_addresses() == {
        "echo": "unix:///tmp/x/echo.sock",
        "wget": "127.0.0.1:7001",
    }
    assert settings.concurrency == 8 and settings.workdir == Path("/mnt/pipe")
    assert "wst_secret" not in repr(settings)


def test_a_work_dir_that_would_need_quoting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_WORKER_WORKDIR", "/tmp/my work")
    with pytest.raises(ValidationError, match="substituted for /mnt/pipe"):
        WorkerSettings(pipeline_id="p", token="t", definition="d", executors="")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("echo", "'echo' is not name=address"),
        ("=unix:///x", "is not name=address"),
        ("a=x:1,a=y:2", "names 'a' twice"),
    ],
)
def test_malformed_executor_lists_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_executors(text)


def test_the_executor_reads_its_listen_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSCHED_WORKER_EXECUTOR_LISTEN", "unix:///mnt/pipe/.wget.sock")
    monkeypatch.setenv("WSCHED_WORKER_EXECUTOR_GRACE_S", "0")
    settings = ExecutorSettings()
    assert settings.listen == "unix:///mnt/pipe/.wget.sock" and settings.grace_s == 0


def test_an_empty_token_is_missing_not_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose's `${ECHO_WORKER_TOKEN:-}` left unset: the agent names what is missing."""
    for name, value in {
        "WSCHED_WORKER_PIPELINE_ID": "p-1",
        "WSCHED_WORKER_TOKEN": "",
        "WSCHED_WORKER_DEFINITION": "/etc/pipeline.json",
        "WSCHED_WORKER_EXECUTORS": "echo=unix:///tmp/x/echo.sock",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        WorkerSettings()  # type: ignore[call-arg]
    [error] = info.value.errors()
    assert (error["loc"], error["type"]) == (("token",), "missing")
