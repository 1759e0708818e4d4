"""Write the SDK's API reference (Markdown) from its docstrings and signatures.

``make sdk-reference`` writes ``docs/sdk-reference.md``; a unit test fails when the file
and the code disagree, so the reference cannot go stale. It reads only what ``wsched``
exports (``wsched.__all__``), in the order of :data:`SECTIONS`. Written here rather than
with a documentation generator: the SDK is small, and one more dev dependency (with its
own theme and configuration) would cost more than these lines.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any

import wsched

#: Headings and the public names under each; a name exported but not listed fails the
#: unit test, so a new public name gets a place in the reference.
SECTIONS: dict[str, tuple[str, ...]] = {
    "Clients": ("Client", "AsyncClient", "RequestRetry"),
    "Sub-clients": (
        "Tenants",
        "Applications",
        "Pipelines",
        "Tasks",
        "Schedules",
        "AsyncTenants",
        "AsyncApplications",
        "AsyncPipelines",
        "AsyncTasks",
        "AsyncSchedules",
    ),
    "Handles and waiting": (
        "TaskHandle",
        "AsyncTaskHandle",
        "ScheduleRunHandle",
        "AsyncScheduleRunHandle",
        "WaitStrategy",
        "LongPoll",
        "PollWithBackoff",
    ),
    "Task options": ("TaskSpec", "TaskRetry", "Backoff", "new_task_id"),
    "Schedule options": ("Catchup",),
    "Answers": (
        "Tenant",
        "TenantCreated",
        "TenantQuotas",
        "TenantStatus",
        "Rotated",
        "Application",
        "Pipeline",
        "PipelineCreated",
        "PipelineDeleting",
        "Task",
        "TaskSummary",
        "Attempt",
        "TaskPage",
        "Accepted",
        "BatchOutcome",
        "BatchResult",
        "BulkOutcome",
        "BulkResult",
        "Stats",
        "PipelineEvent",
        "TaskChange",
        "Schedule",
        "ScheduleRun",
        "ScheduleCounts",
        "SchedulePage",
        "Backfilled",
        "TERMINAL_STATUSES",
    ),
    "Errors": (
        "WschedError",
        "ConnectionFailed",
        "ApiError",
        "BadRequest",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "Conflict",
        "PayloadTooLarge",
        "InvalidRequest",
        "RateLimited",
        "Unavailable",
        "ServerError",
        "TaskTimeout",
        "TaskFailed",
        "PipelineFailed",
        "PipelineTimeout",
    ),
}


def doc(thing: Any) -> str:
    """The docstring, dedented; empty if there is none of its own."""
    return inspect.cleandoc(thing.__doc__) if getattr(thing, "__doc__", None) else ""


def public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """Methods and properties the SDK defines on ``cls`` or its SDK bases, in order."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("wsched"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            if callable(member) or isinstance(member, property | classmethod | staticmethod):
                seen.add(name)
                yield name, member


def _signature(member: Any) -> str:
    """``(a: int, *, b: str = 'x') -> T`` with annotations as written and stable defaults."""
    target: Callable[..., Any] = member.__func__ if isinstance(member, classmethod) else member
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    star_done = False
    for param in signature.parameters.values():
        if param.name in ("self", "cls"):
            continue
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
        star_done = star_done or param.kind in (param.KEYWORD_ONLY, param.VAR_POSITIONAL)
        parts.append(_parameter(param))
    returns = signature.return_annotation
    shown = "" if returns is signature.empty or returns == "None" else f" -> {returns}"
    return f"({', '.join(parts)}){shown}"


def _parameter(param: inspect.Parameter) -> str:
    text = param.name
    if param.annotation is not param.empty:
        text += f": {param.annotation}"
    if param.default is not param.empty:
        default = param.default
        # A function's repr carries its address: name it instead, so the file is stable.
        shown = (
            f"{default.__module__}.{default.__qualname__}" if callable(default) else repr(default)
        )
        text += f" = {shown}"
    return text


def _class(name: str, cls: type) -> list[str]:
    lines = [f"### `{name}`", ""]
    if dataclasses.is_dataclass(cls):
        fields = ", ".join(f"{f.name}: {f.type}" for f in dataclasses.fields(cls) if f.repr)
        lines += [f"Frozen dataclass: `{fields}`", ""]
    elif not issubclass(cls, BaseException) and "__init__" in vars(cls):
        lines += [f"`{name}{_signature(vars(cls)['__init__'])}`", ""]
    lines += [doc(cls), ""]
    for member_name, member in public_members(cls):
        if isinstance(member, property):
            lines += [f"- **`.{member_name}`** (property): {doc(member.fget)}"]
        else:
            lines += [f"- **`.{member_name}{_signature(member)}`**: {_one_line(doc(member))}"]
    return [*lines, ""]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render() -> str:
    """The whole reference."""
    out = [
        "# Python SDK reference",
        "",
        "Generated from the docstrings of `wsched` (`make sdk-reference`); the guide is the",
        'README\'s "Python SDK" section. Everything below is importable from `wsched`.',
        "",
        "In signatures, a `Duration` is a `timedelta`, seconds (`float` or `int`) or the API's",
        "text (`'90s'`, `'1h30m'`, `'PT15M'`); an `Instant` is an aware `datetime` or RFC 3339",
        "text with its offset (`'2026-12-01T09:00:00Z'`). Every `AsyncX` method is the `X` one,",
        "awaited.",
        "",
    ]
    for heading, names in SECTIONS.items():
        out += [f"## {heading}", ""]
        for name in names:
            thing = getattr(wsched, name)
            if inspect.isclass(thing):
                out += _class(name, thing)
            elif callable(thing):
                out += [f"### `{name}{_signature(thing)}`", "", doc(thing), ""]
            else:
                out += [f"### `{name}`", "", f"`{sorted(thing)}`", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
