"""Pure steps of the many-task operations, shared by both clients."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from wsched.client._models import BulkOutcome
from wsched.client._options import TaskSpec, dumps, new_task_id
from wsched.client._task_calls import MAX_BULK_TASKS


def spec_of(item: Mapping[str, Any] | TaskSpec, defaults: TaskSpec) -> TaskSpec:
    """A :class:`TaskSpec` as given, or the ``defaults`` around plain data."""
    if isinstance(item, TaskSpec):
        return item
    return dataclasses.replace(defaults, data=item)


def encoded_items(specs: Iterable[TaskSpec]) -> list[bytes]:
    """Each task as its batch item's JSON, its id fixed now: every retry resends it.

    All at once, before the first request: an item that is not JSON (NaN, a set) fails the
    call before anything is sent, rather than after some chunks were taken.
    """
    return [dumps(spec.batch_item(spec.id or new_task_id())) for spec in specs]


def bulk_chunks(ids: Sequence[str] | None) -> Iterator[Sequence[str] | None]:
    """The ids in runs the API takes in one bulk request; None (no ids) once."""
    if ids is None:
        yield None
        return
    for start in range(0, len(ids), MAX_BULK_TASKS):
        yield ids[start : start + MAX_BULK_TASKS]


def merged(answers: Sequence[BulkOutcome]) -> BulkOutcome:
    """Several bulk answers as one, in order."""
    return BulkOutcome(
        results=tuple(r for answer in answers for r in answer.results),
        acted=sum(answer.acted for answer in answers),
    )
