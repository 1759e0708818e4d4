"""An OCI registry for the tests of ``oci://`` pipeline charts: ``crane registry serve``.

crane is go-containerregistry's command-line tool; its ``registry serve`` is that
project's registry implementation (the one its own tests push to and pull from), serving
the OCI distribution API on a loopback port, blobs kept on disk. helm pushes charts to it
and pulls them from it as from any registry; on loopback it speaks plain HTTP, which helm
accepts for ``127.0.0.1`` without a flag.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from services.infra.cache import Cache
from services.infra.gobuild import GoCommand, build
from services.infra.process import Service, free_port, port_open

CRANE_VERSION = "v0.22.1"

CRANE = GoCommand(
    name="crane",
    module="github.com/google/go-containerregistry",
    version=CRANE_VERSION,
    package="github.com/google/go-containerregistry/cmd/crane",
    ldflags="-s -w",
    env={"CGO_ENABLED": "0"},
)


def provision(cache: Cache) -> Path:
    """Path of the pinned crane binary, built on first use."""
    return build(CRANE, cache)


class OciRegistry:
    """A registry on a free loopback port; its blobs live in a temporary directory."""

    def __init__(self, *, crane: Path) -> None:
        self._crane = crane
        self._work: Path | None = None
        self._service: Service | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as in ``oci://127.0.0.1:<port>/charts/echo``."""
        if not self.port:
            raise RuntimeError("the registry is not started")
        return f"127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 30) -> None:
        self._work = Path(tempfile.mkdtemp(prefix="wsched-registry-"))
        (self._work / "blobs").mkdir()  # crane writes into it but does not make it
        self.port = free_port()
        self._service = Service(
            name="registry",
            argv=[
                str(self._crane),
                "registry",
                "serve",
                "--address",
                f"127.0.0.1:{self.port}",
                "--disk",
                str(self._work / "blobs"),
            ],
            log_path=self._work / "registry.log",
        )
        self._service.start()
        self._service.wait_ready(lambda: port_open(self.port), timeout_s=timeout_s)

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
