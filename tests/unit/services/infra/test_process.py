"""Free loopback ports for the components the tests and `wsched dev` start."""

from __future__ import annotations

import socket

import pytest

from services.infra import process
from services.infra.process import free_port_pair


def test_a_free_pair_is_two_neighbouring_free_ports() -> None:
    port = free_port_pair()
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", port))
        second.bind(("127.0.0.1", port + 1))


def test_a_port_whose_neighbour_is_taken_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as neighbour:
        neighbour.bind(("127.0.0.1", 0))
        blocked = neighbour.getsockname()[1] - 1  # its own port is free, the next is not
        good = free_port_pair()
        offered = iter([blocked, good])
        monkeypatch.setattr(process, "free_port", lambda: next(offered))
        assert process.free_port_pair() == good
