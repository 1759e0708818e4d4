"""The floor: what Kafka and TiDB alone sustain for the benchmark's tasks on this machine.

Nothing of the scheduler or the API runs here; the figures bound what any design on top
of these two components can reach with Python clients on the same cores.

* Kafka: the same task envelopes (100-byte data) produced with the API's producer settings
  (``acks=all``, idempotent, 5 ms linger) in batches of 1,000 with a few batches in flight,
  and consumed by a separate process with the forwarder's consumer settings (partitions
  assigned by hand, 4 MiB fetches, up to 5,000 records per ``getmany``). The rate runs
  from the first send to the last record consumed.
* TiDB: the rows the task path writes, through SQLAlchemy on the real schema: each batch
  of 1,000 tasks is one multi-row INSERT of the task rows (admission), then one multi-row
  upsert of the same rows to ``succeeded`` with their (empty) results inline (the flush).
  An admission thread and a flush thread run side by side on their own connections, as
  the grain's admission and flush do; the rate runs from the first insert to the last
  flush committed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.dialects import mysql

from services.bench.client import task_data
from services.infra.process import Service
from services.kafka.admin import KafkaTopicAdmin
from services.kafka.producer import OutgoingTask, submit_records
from services.placement import Route
from services.store import migrate
from services.store.engine import make_engine
from services.store.schema import tasks

PARTITIONS = 2
#: Batches of task ids the admission thread committed, for the flush thread; None ends it.
Done = queue.Queue[list[str] | None]


class FloorFailed(Exception):
    """A floor measurement did not complete; its figure would be wrong."""


def _payloads(count: int) -> list[bytes]:
    return [json.dumps(task_data(i), separators=(",", ":")).encode() for i in range(count)]


# -- Kafka ---------------------------------------------------------------------------------


async def _produce(*, bootstrap: str, pipeline_id: str, count: int, batch: int) -> float:
    """Produce ``count`` task envelopes; return the wall time of the first send."""
    route = Route(pipeline_id)  # a topic of its own, over PARTITIONS partitions
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=512 * 1024,
        max_request_size=1024 * 1024,
    )
    await producer.start()
    try:
        payloads = _payloads(count)
        in_flight = asyncio.Semaphore(4)
        first = time.time()

        async def send(start: int) -> None:
            async with in_flight:
                items = [
                    OutgoingTask(
                        id=str(uuid.uuid4()), data=d, data_sha256=hashlib.sha256(d).digest()
                    )
                    for d in payloads[start : start + batch]
                ]
                records = submit_records(route, items, now_ms=int(time.time() * 1000))
                futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
                await asyncio.gather(*futures)

        await asyncio.gather(*(send(start) for start in range(0, count, batch)))
        return first
    finally:
        await producer.stop()


async def _consume(*, bootstrap: str, topic: str, count: int, ready: Path) -> float:
    """Consume ``count`` records; return the wall time the last one arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.getmany(timeout_ms=200)  # connected and positioned before "ready"
        ready.touch()  # noqa: ASYNC240 - once, before any measuring starts
        seen = 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            seen += sum(len(records) for records in batches.values())
        return time.time()
    finally:
        await consumer.stop()


def kafka_floor(*, bootstrap: str, count: int, batch: int, work_dir: Path) -> float:
    """Tasks per second through Kafka alone: produced here, consumed in another process."""
    pipeline_id = f"bench-floor-{uuid.uuid4().hex[:12]}"
    asyncio.run(KafkaTopicAdmin(bootstrap=bootstrap).create_pipeline_topic(pipeline_id, PARTITIONS))
    ready, out = work_dir / "floor-consumer.ready", work_dir / "floor-consumer.json"
    flags = {"bootstrap": bootstrap, "topic": Route(pipeline_id).topic, "count": count}
    argv = [sys.executable, "-m", "services.bench.floor", "consume"]
    for flag, value in {**flags, "ready": ready, "out": out}.items():
        argv += [f"--{flag}", str(value)]
    consumer = Service(name="floor consumer", argv=argv, log_path=work_dir / "floor-consumer.log")
    consumer.start()
    try:
        consumer.wait_ready(ready.exists, timeout_s=60)
        first = asyncio.run(
            _produce(bootstrap=bootstrap, pipeline_id=pipeline_id, count=count, batch=batch)
        )
        deadline = time.monotonic() + 600
        while consumer.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not out.exists():
            raise FloorFailed(f"the floor consumer gave no result:\n{consumer.log_tail()}")
        last = float(json.loads(out.read_text())["last_record_unix"])
    finally:
        consumer.stop()
    return count / (last - first)


# -- TiDB ----------------------------------------------------------------------------------


def _task_rows(
    pipeline_id: str, ids: Sequence[str], payloads: Sequence[bytes]
) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return [
        {
            "pipeline_id": pipeline_id,
            "id": task_id,
            "attempt": 1,
            "status": "queued",
            "due_at": now,
            "data": data,
            "data_sha256": hashlib.sha256(data).digest(),
            "created_at": now,
            "updated_at": now,
        }
        for task_id, data in zip(ids, payloads, strict=True)
    ]


def _finished_rows(pipeline_id: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return [
        {
            "pipeline_id": pipeline_id,
            "id": task_id,
            "attempt": 1,
            "status": "succeeded",
            "due_at": now,
            "data": b"",
            "data_sha256": b"",
            "created_at": now,
            "started_at": now,
            "finished_at": now,
            "worker": "bench-worker",
            "lease_epoch": 1,
            "expire_at": now + dt.timedelta(days=7),
            "updated_at": now,
            "result": b"",
        }
        for task_id in ids
    ]


_UPSERT = mysql.insert(tasks)
_UPSERT = _UPSERT.on_duplicate_key_update(
    {
        column: _UPSERT.inserted[column]
        for column in (
            "status",
            "started_at",
            "finished_at",
            "worker",
            "lease_epoch",
            "expire_at",
            "updated_at",
            "result",
        )
    }
)


def _admit(engine: sa.Engine, pipeline_id: str, batches: list[list[str]], done: Done) -> None:
    payloads = _payloads(len(batches[0]))
    for ids in batches:
        with engine.begin() as conn:
            conn.execute(sa.insert(tasks), _task_rows(pipeline_id, ids, payloads[: len(ids)]))
        done.put(ids)
    done.put(None)


def _flush(engine: sa.Engine, pipeline_id: str, done: Done) -> None:
    while (ids := done.get()) is not None:
        with engine.begin() as conn:
            conn.execute(_UPSERT, _finished_rows(pipeline_id, ids))


def tidb_floor(*, root_url: str, count: int, batch: int) -> float:
    """Tasks per second TiDB alone takes for the task path's writes (see the module doc)."""
    database = f"bench_floor_{uuid.uuid4().hex[:8]}"
    admin = make_engine(root_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{database}`"))
        engine = make_engine(f"{root_url.rstrip('/')}/{database}")
        migrate.upgrade(engine)
        pipeline_id = str(uuid.uuid4())
        ids = [str(uuid.uuid4()) for _ in range(count)]
        batches = [ids[i : i + batch] for i in range(0, count, batch)]
        done: Done = queue.Queue()
        started = time.monotonic()
        threads = [
            threading.Thread(target=_admit, args=(engine, pipeline_id, batches, done)),
            threading.Thread(target=_flush, args=(engine, pipeline_id, done)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.monotonic() - started
        _check_written(engine, pipeline_id, count)
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE `{database}`"))
    finally:
        admin.dispose()
    return count / seconds


def _check_written(engine: sa.Engine, pipeline_id: str, count: int) -> None:
    query = sa.select(sa.func.count()).where(
        tasks.c.pipeline_id == pipeline_id, tasks.c.status == "succeeded"
    )
    with engine.connect() as conn:
        written = conn.execute(query).scalar_one()
    if written != count:
        raise FloorFailed(f"the TiDB floor wrote {written} of {count} rows")


# -- the consumer process --------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="the Kafka floor's consumer process")
    parser.add_argument("command", choices=["consume"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    last = asyncio.run(
        _consume(bootstrap=args.bootstrap, topic=args.topic, count=args.count, ready=args.ready)
    )
    args.out.write_text(json.dumps({"last_record_unix": last}))


if __name__ == "__main__":
    main()
