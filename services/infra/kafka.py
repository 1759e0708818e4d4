"""Apache Kafka 4.x, single-node KRaft: jars resolved from Maven Central, run with ``java``."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.infra.cache import Cache, ProvisionError
from services.infra.process import Service, free_port, port_open, run

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.wsched</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.state.name = state.change.logger
logger.state.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


def _require_java() -> tuple[str, str]:
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if not java or not mvn:
        raise ProvisionError(
            "Apache Kafka needs Java 17+ and Maven on PATH to resolve and run the broker "
            "(e.g. `apt-get install openjdk-17-jdk-headless maven`)."
        )
    return java, mvn


def provision(cache: Cache) -> Path:
    """The directory holding the broker's jars (``<dir>/*`` is the class path)."""
    libs = cache.root / "kafka" / KAFKA_VERSION / "libs"
    if (libs / ".complete").exists():
        return libs
    _, mvn = _require_java()
    with cache.locked("kafka"):
        if (libs / ".complete").exists():
            return libs
        workdir = cache.dir("kafka", KAFKA_VERSION)
        (workdir / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
        shutil.rmtree(libs, ignore_errors=True)
        result = run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            cwd=workdir,
            what="resolving Apache Kafka jars from Maven Central",
        )
        jars = list(libs.glob("*.jar"))
        if not any(jar.name.startswith("kafka_2.13-") for jar in jars):
            raise ProvisionError(f"Maven resolved no kafka_2.13 jar into {libs}")
        (libs / ".complete").touch()
        cache.record(
            "kafka", version=KAFKA_VERSION, resolve_s=round(result.seconds, 1), jars=len(jars)
        )
        return libs


@dataclass(kw_only=True)
class KafkaBroker:
    """A single-node KRaft broker+controller whose log lives in ``data_dir``.

    Re-starting a broker on the same ``data_dir`` keeps its topics and offsets, which is
    what ``wsched dev`` relies on for accepted tasks to survive a restart.
    """

    libs: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap_mb: int = 512
    log_level: str = "WARN"
    _service: Service | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service else None

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft-logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "delete.topic.enable": "true",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.data_dir / "server.log", level=self.log_level))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        java, _ = _require_java()
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def start(self, *, timeout_s: float = 90) -> None:
        config = self._write_config()
        if not (self.data_dir / "kraft-logs" / "meta.properties").exists():
            formatted = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    new_cluster_id(),
                    "-c",
                    str(config),
                    "-g",
                ),
                check=False,
                capture_output=True,
                text=True,
            )
            if formatted.returncode != 0:
                raise ProvisionError(
                    f"kafka storage format failed (exit {formatted.returncode}):\n"
                    f"{formatted.stderr or formatted.stdout}"
                )
        self._service = Service(
            name="kafka",
            argv=self._java("kafka.Kafka", str(config)),
            log_path=self.data_dir / "stdout.log",
        )
        self._service.start()
        try:
            self._service.wait_ready(self._ready, timeout_s=timeout_s)
        except ProvisionError as err:
            # Kafka logs to server.log (log4j), not to its stdout: show why it stopped.
            raise ProvisionError(f"{err}\nserver.log:\n{self._server_log_tail()}") from None

    def _server_log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return "(none)"
        # Stack frames would crowd out the messages that say what went wrong.
        messages = [
            line
            for line in text.splitlines()
            if not line.lstrip().startswith(("at ", "... ")) or not line[:1].isspace()
        ]
        return "\n".join(messages[-lines:])

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        log = self.data_dir / "server.log"
        return log.exists() and "Kafka Server started" in log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        """Signal the broker's process group (the chaos soak's ``kill -9``)."""
        if self._service is not None:
            self._service.signal(signum)

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop(grace_s=20)
            self._service = None


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with "-" (as Kafka's own ``Uuid.randomUuid``): the storage tool
    would read it as an option, and fail one run in 64.
    """
    while True:
        encoded = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded
