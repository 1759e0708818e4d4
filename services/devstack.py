"""``wsched dev``: the whole product on one machine with embedded defaults.

It starts a broker (Apache Kafka when Java is present, durable under the data dir; else a
memory-only broker), then the API and the scheduler as child processes, and stops all of
them on Ctrl-C. ``WSCHED_KAFKA_BOOTSTRAP`` set means: use that broker, start none.

The API runs the pipelines' workers as local processes (``WSCHED_DEPLOYER=local``, unless
set otherwise) from charts on this machine, relative to the directory ``wsched dev`` was
started in, and stops them when it stops. Should the API die without doing so, the
workers it recorded under the data dir are stopped here.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.deploy.processes import stop_recorded
from services.infra import kafka
from services.infra.cache import Cache
from services.infra.memory_broker import MemoryBroker
from services.infra.process import Service, port_open
from services.settings import Settings
from services.store import migrate
from services.store.engine import make_engine

log = logging.getLogger("wsched.dev")

#: The API stops its pipelines' workers when it stops (agents get a few seconds to
#: finish their tasks), so it gets longer than the others before it is killed.
_API_STOP_S = 30.0

MEMORY_BROKER_WARNING = (
    "using the memory-only broker ({reason}). QUEUED TASKS WILL NOT SURVIVE A RESTART of "
    "`wsched dev`. Install Java 17+ and Maven to run Apache Kafka instead."
)


@dataclass(frozen=True, kw_only=True)
class Broker:
    bootstrap: str
    kind: str
    stop: Callable[[], None]


def start_broker(settings: Settings, *, warn: Callable[[str], None]) -> Broker:
    if settings.kafka_bootstrap:
        return Broker(bootstrap=settings.kafka_bootstrap, kind="external", stop=lambda: None)
    has_java = bool(shutil.which("java") and shutil.which("mvn"))
    choice = settings.dev_broker
    if choice == "kafka" or (choice == "auto" and has_java):
        libs = kafka.provision(Cache(root=settings.cache_dir))
        broker = kafka.KafkaBroker(
            libs=libs,
            data_dir=(settings.data_dir / "kafka").resolve(),
            port=settings.dev_kafka_port,
            controller_port=settings.dev_kafka_port + 1,
        )
        broker.start()
        return Broker(bootstrap=broker.bootstrap, kind="apache-kafka", stop=broker.stop)
    reason = "WSCHED_DEV_BROKER=memory" if choice == "memory" else "Java/Maven not found"
    warn(MEMORY_BROKER_WARNING.format(reason=reason))
    memory = MemoryBroker(log_dir=settings.data_dir.resolve(), port=settings.dev_kafka_port)
    memory.start()
    return Broker(bootstrap=memory.bootstrap, kind="memory", stop=memory.stop)


def _child(name: str, settings: Settings, bootstrap: str, data_dir: Path) -> Service:
    env = {
        "WSCHED_KAFKA_BOOTSTRAP": bootstrap,
        "WSCHED_DATABASE_URL": settings.effective_database_url(),
        "WSCHED_DATA_DIR": str(data_dir),
        "WSCHED_HTTP_HOST": settings.http_host,
        "WSCHED_HTTP_PORT": str(settings.http_port),
        "WSCHED_GRPC_HOST": settings.grpc_host,
        "WSCHED_GRPC_PORT": str(settings.grpc_port),
        "WSCHED_METRICS_PORT": str(settings.metrics_port),
        "WSCHED_OPERATOR_KEY": settings.operator_key.get_secret_value(),
        "WSCHED_DEPLOYER": _deployer(settings),
    }
    return Service(
        name=name,
        argv=[sys.executable, "-m", "services.cli", name],
        log_path=data_dir / "logs" / f"{name}.log",
        env=env,
    )


def _deployer(settings: Settings) -> str:
    # Local workers, unless WSCHED_DEPLOYER says otherwise (noop: bring your own workers).
    return settings.deployer if "deployer" in settings.model_fields_set else "local"


def _stop(children: list[Service], data_dir: Path) -> None:
    for child in children:
        child.stop(grace_s=_API_STOP_S if child.name == "api" else 10)
    # Workers an API killed before it could stop them (they run in sessions of their own).
    stop_recorded(data_dir / "pipelines")


def _migrate(settings: Settings) -> None:
    engine = make_engine(settings.effective_database_url())
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def run(settings: Settings, *, say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    """Run until SIGINT/SIGTERM; return the exit code."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    _migrate(settings)
    broker = start_broker(settings, warn=warn)
    say(f"broker: {broker.kind} at {broker.bootstrap}")
    children = [_child(name, settings, broker.bootstrap, data_dir) for name in ("api", "scheduler")]
    try:
        for child in children:
            child.start()
        children[0].wait_ready(
            lambda: port_open(settings.http_port, settings.http_host), timeout_s=60
        )
        say(f"API: http://{settings.http_host}:{settings.http_port} (docs at /docs)")
        say(f"logs: {data_dir / 'logs'} - press Ctrl-C to stop")
        while not stop.wait(1):
            dead = [child.name for child in children if not child.running()]
            if dead:
                warn(f"{', '.join(dead)} exited; see {data_dir / 'logs'}. Stopping.")
                return 1
        return 0
    finally:
        _stop(children, data_dir)
        broker.stop()
        say("stopped")
