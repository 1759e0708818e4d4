"""A pipeline chart's values as a deployer without Helm reads them.

The values are the chart's ``values.yaml`` deep-merged with the pipeline's own ``values``
(and its ``scaling``), as Helm merges ``--values``. What they say about the workers — the
definition (``pipeline:``), the executors, the replicas and the agent's settings — is a
:class:`WorkerSpec`; charts/pipeline-lib/README.md describes every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.worker.definition import PipelineDefinition

#: Executor names become file names (their sockets) and container names.
_EXECUTOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: More agents than this on one machine is a typo, not a plan.
MAX_LOCAL_REPLICAS = 32


class ChartError(ValueError):
    """The chart cannot be used; the message says what is wrong and what to do."""


def local_chart_path(chart: str, *, base_dir: Path) -> Path:
    """Where a chart given as a local path (``file://`` optional) is: relative paths are
    taken from ``base_dir``. Whether anything is there is the caller's to check."""
    path = Path(chart.removeprefix("file://")).expanduser()
    return path if path.is_absolute() else base_dir / path


def resolve_local_chart(chart: str, *, base_dir: Path) -> Path:
    """The directory of a chart given as a local path (relative to ``base_dir``)."""
    path = local_chart_path(chart, base_dir=base_dir)
    if not path.is_dir():
        # The reason is shown to the tenant: the chart as given, never where we looked.
        raise ChartError(
            f"chart {chart!r} is not a local directory. Workers run as local processes here "
            "(WSCHED_DEPLOYER=local, as in `wsched dev`), which takes charts from this "
            "machine only: give a chart directory such as charts/examples/echo, relative "
            "to where the API was started, or an absolute path"
        )
    if not (path / "Chart.yaml").is_file():
        raise ChartError(f"chart {chart!r} is not a Helm chart: it has no Chart.yaml")
    return path


def load_values(chart_dir: Path) -> dict[str, Any]:
    """The chart's ``values.yaml`` (empty if it has none)."""
    path = chart_dir / "values.yaml"
    if not path.exists():
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ChartError(f"cannot read the values.yaml of chart {chart_dir.name}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ChartError(f"the values.yaml of chart {chart_dir.name} is not a mapping")
    return values


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged onto ``base`` as Helm does: maps merge key by key, any
    other value (lists too) replaces, and ``null`` removes a key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def chart_values(chart_dir: Path, *overrides: Mapping[str, Any]) -> dict[str, Any]:
    values = load_values(chart_dir)
    for override in overrides:
        values = merge_values(values, override)
    return values


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What a pipeline chart's values say about its workers."""

    definition: dict[str, Any]
    executors: tuple[str, ...]
    replicas: int
    concurrency: int
    task_timeout_s: float
    grace_s: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> WorkerSpec:
        definition = _definition(values)
        executors = _executors(values, definition)
        agent = _mapping(values, "agent")
        scaling = _mapping(values, "scaling")
        return cls(
            definition=definition.model_dump(mode="json", exclude_defaults=True),
            executors=executors,
            replicas=_int(scaling, "min_replicas", "scaling", 1, maximum=MAX_LOCAL_REPLICAS),
            concurrency=_int(agent, "concurrency", "agent", 4, minimum=1, maximum=1000),
            task_timeout_s=_float(agent, "task_timeout_s", "agent", 3600.0, minimum=1),
            grace_s=_float(agent, "grace_s", "agent", 30.0),
        )


def _mapping(values: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = values.get(key) or {}
    if not isinstance(found, Mapping):
        raise ChartError(f"values.{key} must be a mapping, not {type(found).__name__}")
    return found


def _definition(values: Mapping[str, Any]) -> PipelineDefinition:
    steps = values.get("pipeline")
    if not isinstance(steps, list) or not steps:
        raise ChartError(
            "values.pipeline must be the pipeline's steps, a non-empty list of "
            "{executor: NAME, commands: [COMMAND, ...]}"
        )
    try:
        return definition_of(values)
    except ValueError as err:
        raise ChartError(f"values.pipeline is not a valid definition: {err}") from None


def definition_of(values: Mapping[str, Any]) -> PipelineDefinition:
    """What pipeline-lib renders into the ConfigMap: the steps, the final exit codes and the
    definition's timeout. ValueError naming each bad value (``values.pipeline.0.handler``)."""
    fields: dict[str, Any] = {"pipeline": values.get("pipeline")}
    for key in ("non_retryable_exit_codes", "timeout_s"):
        if values.get(key):
            fields[key] = values[key]
    try:
        return PipelineDefinition.model_validate(fields)
    except ValidationError as err:
        raise ValueError(
            "; ".join(
                f"values.{'.'.join(str(part) for part in e['loc'])}: {e['msg']}"
                for e in err.errors()
            )
        ) from None


def _executors(values: Mapping[str, Any], definition: PipelineDefinition) -> tuple[str, ...]:
    executors = _mapping(values, "executors")
    for name in executors:
        if not _EXECUTOR_NAME.match(str(name)):
            raise ChartError(
                f"values.executors: {name!r} is not a valid executor name "
                "(letters, digits and _.- up to 63 characters, starting with a letter or digit)"
            )
    missing = sorted(definition.executors() - set(executors))
    if missing:
        raise ChartError(
            f"values.pipeline names executor(s) {', '.join(missing)}, which values.executors "
            "does not list: add each with its image"
        )
    return tuple(sorted(executors))


def _checked(
    section: Mapping[str, Any], key: str, where: str, default: float, minimum: float, maximum: float
) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ChartError(f"values.{where}.{key} must be a number, not {value!r}")
    if not minimum <= value <= maximum:
        raise ChartError(
            f"values.{where}.{key} must be between {minimum:g} and {maximum:g}, not {value}"
        )
    return float(value)


def _int(
    section: Mapping[str, Any],
    key: str,
    where: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int = 1_000_000,
) -> int:
    value = _checked(section, key, where, default, minimum, maximum)
    if not value.is_integer():
        raise ChartError(f"values.{where}.{key} must be a whole number, not {value:g}")
    return int(value)


def _float(
    section: Mapping[str, Any],
    key: str,
    where: str,
    default: float,
    *,
    minimum: float = 0,
    maximum: float = 7 * 24 * 3600,
) -> float:
    return _checked(section, key, where, default, minimum, maximum)
