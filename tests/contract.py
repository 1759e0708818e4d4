"""What every deployment artefact (compose, the scheduler's chart, pipeline charts) must
agree on with the code: the ``wsched`` commands it runs and the ``WSCHED_*`` settings it
sets. Shared by the tests of each artefact."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pydantic
import pytest
import typer
from typer.core import TyperGroup

from services.cli import app
from services.settings import Settings
from services.worker.settings import ExecutorSettings, PipelinesWorkerSettings, WorkerSettings

_SETTINGS: tuple[tuple[type[pydantic.BaseModel], str], ...] = (
    (Settings, "WSCHED_"),
    (WorkerSettings, "WSCHED_WORKER_"),
    (PipelinesWorkerSettings, "WSCHED_WORKER_"),
    (ExecutorSettings, "WSCHED_WORKER_EXECUTOR_"),
)


def known_env() -> set[str]:
    """Every ``WSCHED_*`` variable some wsched process reads."""
    names: set[str] = set()
    for settings, prefix in _SETTINGS:
        names |= {prefix + field.upper() for field in settings.model_fields}
    return names


def check_command(argv: Sequence[str], where: str) -> None:
    """``wsched <argv>`` is a real command with options it accepts (raises otherwise)."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.context_class(group)
    resolved = group.get_command(ctx, argv[0])
    assert resolved is not None, f"{where}: wsched has no command {argv[0]!r}"
    if isinstance(resolved, TyperGroup):
        assert resolved.get_command(ctx, argv[1]) is not None, f"{where}: {list(argv)}"
    else:
        resolved.make_context(argv[0], list(argv[1:]))  # raises on an unknown option


def check_settings(env: Mapping[str, str], where: str) -> None:
    """Every ``WSCHED_*`` variable is a real setting and the process's settings accept
    the values (those not given, such as values from Secrets, take their defaults)."""
    valid = known_env()
    for key in env:
        if key.startswith("WSCHED_"):
            assert key in valid, f"{where}: {key} is not a setting of any wsched process"
    ours = {
        key: value
        for key, value in env.items()
        if key.startswith("WSCHED_") and not key.startswith("WSCHED_WORKER_")
    }
    # Read as the process reads them: from its environment (lists and maps are JSON).
    with pytest.MonkeyPatch.context() as patch:
        for key in os.environ:
            if key.startswith("WSCHED_"):
                patch.delenv(key)
        for key, value in ours.items():
            patch.setenv(key, value)
        try:
            Settings()
        except pydantic.ValidationError as err:
            raise AssertionError(f"{where}: settings refused: {err}") from None
