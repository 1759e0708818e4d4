"""Python handlers of the benchmarks (``wsched bench-worker``'s ``python`` pipeline)."""

from __future__ import annotations

from typing import Any


def echo(data: dict[str, Any]) -> Any:
    """The echo chart's work as a handler: the task's message is its result."""
    return data.get("message")
