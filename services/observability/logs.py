"""Process logging: the usual text lines, or one JSON object a line on request.

JSON lines (``log_format="json"``) carry, besides time, level, logger and message, the
ids of what the line is about when they are known: ``task_id`` and ``pipeline_id`` from
:func:`log_context` (a context variable, so they follow a task through its coroutine),
and ``trace_id`` and ``span_id`` of the current span when tracing is on. A log search by
a task or trace id then finds every line of every process about it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_task_id: ContextVar[str | None] = ContextVar("wsched_task_id", default=None)
_pipeline_id: ContextVar[str | None] = ContextVar("wsched_pipeline_id", default=None)


@contextlib.contextmanager
def log_context(*, task_id: str | None = None, pipeline_id: str | None = None) -> Iterator[None]:
    """Lines logged inside carry these ids (JSON logs); ``None`` keeps the outer value."""
    tokens = []
    if task_id is not None:
        tokens.append((_task_id, _task_id.set(task_id)))
    if pipeline_id is not None:
        tokens.append((_pipeline_id, _pipeline_id.set(pipeline_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextIds(logging.Filter):
    """Puts the ids known in the current context on each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _ids():
            if not hasattr(record, name):  # an explicit ``extra=`` wins
                setattr(record, name, value)
        return True


def _ids() -> Iterator[tuple[str, str]]:
    task_id, pipeline_id = _task_id.get(), _pipeline_id.get()
    if task_id is not None:
        yield "task_id", task_id
    if pipeline_id is not None:
        yield "pipeline_id", pipeline_id
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        yield "trace_id", format(context.trace_id, "032x")
        yield "span_id", format(context.span_id, "016x")


def json_formatter() -> logging.Formatter:
    # ``time`` is ISO 8601 in UTC, which log stores parse without a pattern.
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure_logging(*, level: str, log_format: LogFormat = "text") -> None:
    """Set up the root logger once at process start (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextIds())
    handler.setFormatter(
        json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # grpc's Cython layer logs a line per call at DEBUG ("Loaded running loop"), which
    # buried a worker's own debug lines; it keeps INFO and above.
    logging.getLogger("grpc._cython.cygrpc").setLevel(max(logging.INFO, logging.root.level))
