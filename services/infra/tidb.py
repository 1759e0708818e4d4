"""TiDB: ``tidb-server`` built from Go modules, run standalone on its embedded unistore."""

from __future__ import annotations

import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.infra import gobuild
from services.infra.cache import Cache
from services.infra.process import Service, free_port, port_open

# A master commit of pingcap/tidb (2025-11-26). TiDB's release tags are not valid Go module
# versions, so a commit is pinned; its pkg/parser module is published at the same commit.
_COMMIT = "20251126154744-e4e814fdc0af"

TIDB = gobuild.GoCommand(
    name="tidb-server",
    module="github.com/pingcap/tidb",
    version=f"v1.1.0-beta.0.{_COMMIT}",
    package="github.com/pingcap/tidb/cmd/tidb-server",
    local_version=f"v0.0.0-{_COMMIT}",
    ldflags="-X github.com/pingcap/tidb/pkg/util/versioninfo.TiDBGitHash=e4e814fdc0af",
)


def provision(cache: Cache) -> Path:
    return gobuild.build(TIDB, cache)


@dataclass(kw_only=True)
class TidbServer:
    """One ``tidb-server`` on loopback. With ``data_dir`` its data survives a restart."""

    binary: Path
    data_dir: Path | None = None
    port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    _service: Service | None = field(default=None, init=False)
    _scratch: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service else None

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def start(self, *, timeout_s: float = 120) -> None:
        if self.data_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="wsched-tidb-")
            run_dir = Path(self._scratch.name)
            store_path = ""  # unistore keeps everything in memory
        else:
            run_dir = self.data_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            store_path = str(run_dir / "store")
        self._service = Service(
            name="tidb-server",
            argv=[
                str(self.binary),
                "-store=unistore",
                f"-path={store_path}",
                "-host=127.0.0.1",
                f"-P={self.port}",
                f"-status={self.status_port}",
                "-status-host=127.0.0.1",
                f"-socket={run_dir / 'tidb.sock'}",
                f"-log-file={run_dir / 'tidb.log'}",
                "-L=error",
                # By default the slow-query log lands in the working directory.
                f"-log-slow-query={run_dir / 'tidb-slow.log'}",
            ],
            log_path=run_dir / "stdout.log",
        )
        self._service.start()
        self._service.wait_ready(self._ready, timeout_s=timeout_s)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        url = f"http://127.0.0.1:{self.status_port}/status"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def signal(self, signum: int) -> None:
        if self._service is not None:
            self._service.signal(signum)

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop(grace_s=15)
            self._service = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
