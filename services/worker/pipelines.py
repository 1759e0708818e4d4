"""The pipelines one agent serves (``WSCHED_WORKER_PIPELINES``): a JSON or YAML file.

.. code-block:: yaml

    pipelines:
      - id: 0b6f3c1e-...          # the pipeline's id (``wsched pipelines get``)
        token_env: ORDERS_TOKEN   # its worker token: in this environment variable,
        definition: orders.yaml   # its definition (paths are relative to this file)
      - id: 7d1a9e42-...
        token_file: /var/run/secrets/wsched/invoices   # or in a file (a mounted Secret)
        definition: invoices.yaml

Tokens are named, never written in the file: it is configuration, they are secrets.
Every problem is one :class:`DefinitionError` naming the file and the entry.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.worker.definition import (
    DefinitionError,
    PipelineDefinition,
    load_definition,
    problems_of,
)

#: More would be a Deployment's worth of pipelines in one process: split them instead.
MAX_PIPELINES = 100


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    token_env: str | None = Field(default=None, min_length=1, max_length=255)
    token_file: Path | None = None
    definition: Path

    @model_validator(mode="after")
    def _one_token_source(self) -> _Entry:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env and token_file")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipelines: list[_Entry] = Field(min_length=1, max_length=MAX_PIPELINES)


@dataclass(frozen=True, kw_only=True)
class ServedPipeline:
    """One pipeline of the agent: its id, worker token and loaded definition."""

    id: str
    token: str
    definition: PipelineDefinition

    def __repr__(self) -> str:  # never the token
        return f"ServedPipeline(id={self.id!r})"


def load_pipelines(path: Path, *, environ: dict[str, str] | None = None) -> list[ServedPipeline]:
    """Read the file, each token and each definition; raise DefinitionError on anything
    missing or malformed (a duplicate pipeline id, an unset variable, an empty token)."""
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DefinitionError(f"cannot read the pipelines file {path}: {err.strerror}") from None
    try:
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise DefinitionError(f"{path} is not valid JSON or YAML: {err}") from None
    try:
        listed = _File.model_validate(raw)
    except ValidationError as err:
        raise DefinitionError(
            f"{path} is not a pipelines file ({problems_of(err)}); expected "
            '{"pipelines": [{"id": "...", "token_env": "VAR", "definition": "file.yaml"}]}'
        ) from None
    served: list[ServedPipeline] = []
    for number, entry in enumerate(listed.pipelines, start=1):
        where = f"{path}, pipeline {number} ({entry.id})"
        if any(known.id == entry.id for known in served):
            raise DefinitionError(f"{where}: listed twice")
        served.append(
            ServedPipeline(
                id=entry.id,
                token=_token(entry, env, where, beside=path.parent),
                definition=load_definition(_beside(path.parent, entry.definition)),
            )
        )
    return served


def _beside(folder: Path, path: Path) -> Path:
    """A path the file names: relative ones are relative to the file's folder."""
    return path if path.is_absolute() else folder / path


def _token(
    entry: _Entry, env: dict[str, str] | os._Environ[str], where: str, *, beside: Path
) -> str:
    if entry.token_env is not None:
        token = env.get(entry.token_env, "").strip()
        if not token:
            raise DefinitionError(f"{where}: the variable {entry.token_env} is unset or empty")
        return token
    token_file = _beside(beside, entry.token_file or Path())  # _Entry holds one of the two
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise DefinitionError(
            f"{where}: cannot read its token file {token_file}: {err.strerror}"
        ) from None
    if not token:
        raise DefinitionError(f"{where}: its token file {token_file} is empty")
    return token
