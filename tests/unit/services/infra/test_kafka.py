from __future__ import annotations

import base64
from pathlib import Path

from services.infra.kafka import KafkaBroker, new_cluster_id


def test_cluster_id_is_16_bytes_of_url_safe_base64() -> None:
    cluster_id = new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """The storage tool would read "-CA8Z..." as an option: one run in 64 failed so."""
    drawn = iter([b"\xf8" + bytes(15), b"\x08" + bytes(15)])  # "-AAA..." then "CAAA..."
    assert new_cluster_id(lambda: next(drawn)) == "CAAAAAAAAAAAAAAAAAAAAA"


def test_broker_config_listens_on_loopback_with_single_node_replication(tmp_path: Path) -> None:
    broker = KafkaBroker(libs=tmp_path, data_dir=tmp_path / "k", port=1111, controller_port=2222)
    config = broker._write_config().read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:1111,CONTROLLER://127.0.0.1:2222\n" in config
    assert "controller.quorum.voters=1@127.0.0.1:2222\n" in config
    assert "offsets.topic.replication.factor=1\n" in config
    assert "auto.create.topics.enable=false\n" in config
    assert broker.bootstrap == "127.0.0.1:1111"


def test_a_failed_start_shows_the_messages_of_server_log_not_its_stack_frames(
    tmp_path: Path,
) -> None:
    broker = KafkaBroker(libs=tmp_path, data_dir=tmp_path, port=1111, controller_port=2222)
    (tmp_path / "server.log").write_text(
        "[2026-11-23 15:55:17,446] ERROR Unable to start acceptor for CONTROLLER\n"
        "org.apache.kafka.common.KafkaException: Socket server failed to bind: in use.\n"
        + "\tat kafka.network.SocketServer.enableRequestProcessing(SocketServer.scala:201)\n"
        * 40
        + "\t... 6 more\n"
        "Caused by: java.net.BindException: Address already in use\n"
    )
    tail = broker._server_log_tail()
    assert tail.splitlines() == [
        "[2026-11-23 15:55:17,446] ERROR Unable to start acceptor for CONTROLLER",
        "org.apache.kafka.common.KafkaException: Socket server failed to bind: in use.",
        "Caused by: java.net.BindException: Address already in use",
    ]
