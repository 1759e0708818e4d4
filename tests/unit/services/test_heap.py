"""Startup objects frozen out of the garbage collector's scans."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.heap import freeze_startup_heap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process must not keep its objects frozen after the test."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_startup_leave_the_scans_and_later_garbage_is_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > 1000  # the modules' objects, at least
    gc.collect()
    # A cycle made after the freeze is garbage like any other.
    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2
