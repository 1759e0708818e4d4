"""Request bodies built from keyword arguments: shared by both clients, pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from wsched.client._models import PipelineCreated
from wsched.client._options import Duration, TaskRetry, duration_text


def pipeline_fields(
    *,
    chart: str | None = None,
    chart_version: str | None = None,
    values: Mapping[str, Any] | None = None,
    scaling: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
    retry: TaskRetry | None = None,
    lease_timeout_s: int | None = None,
    retention: Duration | None = None,
    expires_after: Duration | None = None,
) -> dict[str, Any]:
    """A pipeline's settings as the API spells them; the ones given only (None: unset,
    so a PATCH leaves them alone). ``expires_after=0`` clears a default deadline."""
    given: dict[str, Any] = {
        "chart": chart,
        "chart_version": chart_version,
        "values": None if values is None else dict(values),
        "scaling": None if scaling is None else dict(scaling),
        "max_attempts": max_attempts,
        "retry": None if retry is None else retry.to_json(),
        "lease_timeout_s": lease_timeout_s,
        "retention": _span(retention),
        "expires_after": _span(expires_after),
    }
    return {key: value for key, value in given.items() if value is not None}


def _span(value: Duration | None) -> Any:
    """Numbers go as seconds (0 stays 0); text and timedeltas in the API's spelling."""
    if value is None or isinstance(value, int | float):
        return value
    return duration_text(value)


def pipeline_spec(
    name: str, partitions: int | None, fields: dict[str, Any], *, topic: str | None = None
) -> dict[str, Any]:
    """The body of a pipeline's create (what is not given is left to the API's defaults)."""
    spec = {"name": name, **fields}
    if topic is not None:
        spec["topic"] = topic
    if partitions is not None:
        spec["partitions"] = partitions
    return spec


def with_state(created: PipelineCreated, state: str) -> PipelineCreated:
    """The created pipeline as it stands after waiting: its state moved on."""
    return dataclasses.replace(created, state=state, raw={**created.raw, "state": state})
