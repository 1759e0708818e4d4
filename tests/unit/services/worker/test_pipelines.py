"""The pipelines file of an agent serving several pipelines: what it accepts, and each
mistake named with its file and entry (a worker that cannot start must say why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.worker import agent_process
from services.worker.definition import DefinitionError
from services.worker.pipelines import load_pipelines

DEFINITION = {"pipeline": [{"executor": "sh", "commands": ["echo {{id}}"]}]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "orders.json").write_text(json.dumps(DEFINITION))
    (tmp_path / "invoices.token").write_text("wst_invoices\n")
    return tmp_path


def write(folder: Path, text: str, name: str = "pipelines.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_tokens_by_variable_or_file_and_definitions_relative_to_the_file(folder: Path) -> None:
    path = write(
        folder,
        f"""
pipelines:
  - id: p-orders
    token_env: ORDERS_TOKEN
    definition: orders.json
  - id: p-invoices
    token_file: {folder / "invoices.token"}
    definition: {folder / "orders.json"}
""",
    )
    served = load_pipelines(path, environ={"ORDERS_TOKEN": "wst_orders"})
    assert [(p.id, p.token) for p in served] == [
        ("p-orders", "wst_orders"),
        ("p-invoices", "wst_invoices"),
    ]
    assert served[0].definition.executors() == {"sh"}
    assert "wst_" not in repr(served)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pipelines: []", "pipelines: List should have at least 1 item"),
        ("[", "is not valid JSON or YAML"),
        (
            "pipelines: [{id: a, definition: orders.json}]",
            "give exactly one of token_env and token_file",
        ),
        (
            "pipelines: [{id: a, token_env: X, token_file: f, definition: orders.json}]",
            "give exactly one of token_env and token_file",
        ),
        ("pipelines: [{id: a, token_env: UNSET, definition: orders.json}]", "UNSET is unset"),
        (
            "pipelines: [{id: a, token_env: T, definition: orders.json, tags: [x]}]",
            "tags: Extra inputs are not permitted",
        ),
        (
            "pipelines: [{id: a, token_env: T, definition: orders.json},"
            " {id: a, token_env: T, definition: orders.json}]",
            "pipeline 2 (a): listed twice",
        ),
        ("pipelines: [{id: a, token_env: T, definition: nowhere.json}]", "cannot read"),
        ("pipelines: [{id: a, token_file: empty, definition: orders.json}]", "is empty"),
    ],
)
def test_each_mistake_is_named(folder: Path, text: str, says: str) -> None:
    (folder / "empty").write_text("\n")
    path = write(folder, text)
    with pytest.raises(DefinitionError) as info:
        load_pipelines(path, environ={"T": "wst_t", "UNSET": " "})
    assert says in str(info.value)
    assert str(path) in str(info.value) or "nowhere.json" in str(info.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read the pipelines file"):
        load_pipelines(tmp_path / "absent.yaml")


def test_the_single_pipeline_variables_cannot_be_mixed_in(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(folder, "pipelines: [{id: a, token_env: T, definition: orders.json}]")
    monkeypatch.setenv("T", "wst_t")
    monkeypatch.setenv("WSCHED_WORKER_PIPELINES", str(path))
    monkeypatch.setenv("WSCHED_WORKER_EXECUTORS", "sh=unix:///tmp/sh.sock")
    settings, served = agent_process._configured()
    assert [p.id for p in served] == ["a"] and settings.executor_addresses() == {
        "sh": "unix:///tmp/sh.sock"
    }
    monkeypatch.setenv("WSCHED_WORKER_PIPELINE_ID", "b")
    with pytest.raises(ValueError, match="WSCHED_WORKER_PIPELINE_ID is set with"):
        agent_process._configured()
