"""JSON logs: one object a line, with the ids of the task, pipeline and trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.observability import log_context, setup_tracing
from services.observability.logs import ContextIds, configure_logging, json_formatter


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextIds())
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("wsched.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _read(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_usual_fields(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    logger.warning('task %s: "quoted"\nsecond line', "t-1")
    [line] = _read(stream)
    assert line["message"] == 'task t-1: "quoted"\nsecond line'
    assert line["level"] == "WARNING" and line["logger"] == "wsched.test.json"
    assert str(line["time"]).endswith("+00:00")  # ISO 8601, UTC
    assert "task_id" not in line and "trace_id" not in line


def test_task_and_pipeline_ids_come_from_the_context_and_nest(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    with log_context(pipeline_id="p-1"):
        with log_context(task_id="t-1"):
            logger.info("inner")
        logger.info("outer")
    logger.info("after")
    inner, outer, after = _read(stream)
    assert (inner["task_id"], inner["pipeline_id"]) == ("t-1", "p-1")
    assert "task_id" not in outer and outer["pipeline_id"] == "p-1"
    assert "pipeline_id" not in after


def test_an_explicit_extra_wins_over_the_context(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    with log_context(task_id="from-context"):
        logger.info("x", extra={"task_id": "explicit"})
    assert _read(stream)[0]["task_id"] == "explicit"


def test_trace_and_span_ids_of_the_current_span(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    logger, stream = lines
    tracing = setup_tracing(
        service="test", endpoint=None, processors=[SimpleSpanProcessor(InMemorySpanExporter())]
    )
    with tracing.require().start_as_current_span("s") as span:
        logger.info("in a span")
    context = span.get_span_context()
    [line] = _read(stream)
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_exceptions_are_kept_in_the_object(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    [line] = _read(stream)
    assert "ValueError: boom" in str(line["exc_info"])


def test_configure_logging_installs_one_handler_on_the_root() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level="DEBUG", log_format="json")
        assert len(root.handlers) == 1 and root.level == logging.DEBUG
        assert isinstance(root.handlers[0].formatter, type(json_formatter()))
        configure_logging(level="INFO", log_format="text")
        assert len(root.handlers) == 1
        assert not isinstance(root.handlers[0].formatter, type(json_formatter()))
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
