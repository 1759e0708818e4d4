"""The cache directory where provisioned components live, with a lock and build records."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/workload-scheduler``, falling back to ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "workload-scheduler"


class ProvisionError(RuntimeError):
    """A component could not be provisioned; the message says what to do about it."""


@dataclass(frozen=True, kw_only=True)
class Cache:
    root: Path

    def dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Serialise provisioning of one component across processes (xdist, CI, dev)."""
        lock_path = self.dir("locks") / f"{name}.lock"
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record(self, name: str, **figures: Any) -> None:
        """Keep the figures of the last provisioning of ``name`` (``wsched infra status``)."""
        path = self.dir("records") / f"{name}.json"
        path.write_text(json.dumps({"at": time.time(), **figures}, indent=2))

    def records(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.dir("records").glob("*.json")):
            out[path.stem] = json.loads(path.read_text())
        return out
