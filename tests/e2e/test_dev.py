"""``wsched dev`` as a newcomer runs it: it starts, is ready, stops on Ctrl-C, keeps data."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.infra.process import free_port, free_port_pair, port_open


@contextmanager
def wsched_dev(data_dir: Path, *, http_port: int, kafka_port: int, broker: str) -> Iterator[str]:
    env = {
        **os.environ,
        "WSCHED_DATA_DIR": str(data_dir),
        "WSCHED_HTTP_PORT": str(http_port),
        "WSCHED_GRPC_PORT": str(free_port()),
        "WSCHED_METRICS_PORT": str(free_port()),
        "WSCHED_DEV_KAFKA_PORT": str(kafka_port),
        "WSCHED_DEV_BROKER": broker,
    }
    env.pop("WSCHED_KAFKA_BOOTSTRAP", None)
    log = (data_dir.parent / f"dev-{broker}.out").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "dev"], env=env, stdout=log, stderr=log
    )
    try:
        _wait_ready(f"http://127.0.0.1:{http_port}/readyz", proc)
        yield f"127.0.0.1:{kafka_port}"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        log.close()
    assert code == 0, (data_dir.parent / f"dev-{broker}.out").read_text()
    assert not port_open(http_port), "the API still answers after Ctrl-C"
    assert not port_open(kafka_port), "the broker still answers after Ctrl-C"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "wsched dev exited during start-up"
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer 200 within 120 s")


async def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str) -> bytes:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        value: bytes = record.value
        return value
    finally:
        await consumer.stop()


def test_dev_is_ready_stops_on_ctrl_c_and_keeps_queued_data(tmp_path: Path) -> None:
    data_dir, http_port, kafka_port = tmp_path / "data", free_port(), free_port_pair()
    with wsched_dev(data_dir, http_port=http_port, kafka_port=kafka_port, broker="kafka") as boot:
        health = httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=3)
        assert health.json() == {"status": "ok"}
        asyncio.run(_produce(boot, "survives-restart", b"queued before restart"))
    assert (data_dir / "wsched.db").exists()
    with wsched_dev(data_dir, http_port=http_port, kafka_port=kafka_port, broker="kafka") as boot:
        assert asyncio.run(_consume_one(boot, "survives-restart")) == b"queued before restart"


def test_dev_without_java_falls_back_to_the_memory_broker_and_says_so(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with wsched_dev(
        data_dir, http_port=free_port(), kafka_port=free_port_pair(), broker="memory"
    ) as boot:
        asyncio.run(_produce(boot, "memory-topic", b"hello"))
        assert asyncio.run(_consume_one(boot, "memory-topic")) == b"hello"
    out = (tmp_path / "dev-memory.out").read_text()
    assert "WILL NOT SURVIVE A RESTART" in out


@pytest.mark.parametrize("path", ["/readyz"])
def test_readyz_is_red_when_the_broker_is_unreachable(tmp_path: Path, path: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "WSCHED_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",  # nothing listens there
        "WSCHED_DATA_DIR": str(tmp_path),
        "WSCHED_HTTP_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=15)
        assert response.status_code == 503
        body = response.json()
        assert body["checks"]["kafka"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
