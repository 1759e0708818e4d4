"""Topic administration: a topic per dedicated pipeline, the shared topic of the others,
and the placement topic.

Every operation is idempotent (an existing topic on create, a missing one on delete, are
success), because the reconciler retries after a crash without knowing how far it got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from services.live.wire import EVENTS_PARTITIONS, EVENTS_RETENTION_MS, EVENTS_TOPIC
from services.placement import PLACEMENT_TOPIC, SHARDS, SHARED_TOPIC, pipeline_topic

R = TypeVar("R")

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_LEADER_POLL_S = 0.1
#: Replicas of a topic when the cluster has enough brokers; fewer on a smaller cluster.
_MAX_REPLICATION = 3


class TopicError(Exception):
    """The broker refused a topic operation (or could not be reached)."""


class TopicAdmin(Protocol):
    async def create_pipeline_topic(self, pipeline_id: str, partitions: int) -> None: ...

    async def delete_pipeline_topic(self, pipeline_id: str) -> None: ...

    async def ensure_placement_topic(self) -> None: ...

    async def ensure_shared_topic(self) -> None:
        """``wsched.shared`` (D3): one partition per shard, for the shared pipelines."""
        ...

    async def ensure_events_topic(self) -> None:
        """``wsched.events`` (D6), with its short retention."""
        ...


class KafkaTopicAdmin:
    """The :class:`TopicAdmin` on a Kafka cluster; a short-lived admin client per call.

    Topic operations are rare (pipeline create and delete), so a connection per call
    costs little and never leaves a broken long-lived client behind.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        timeout_s: float = 15.0,
        replication_factor: int | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._replication_factor = replication_factor

    async def create_pipeline_topic(self, pipeline_id: str, partitions: int) -> None:
        await self._create(pipeline_topic(pipeline_id), partitions)

    async def ensure_placement_topic(self) -> None:
        await self._create(PLACEMENT_TOPIC, SHARDS)

    async def ensure_shared_topic(self) -> None:
        # The default retention, as a dedicated topic's: records wait there for their
        # grain (a stalled one is read again from its watermark). Its size is checked: a
        # shard's records go to the partition of the shard's number.
        await self._create(SHARED_TOPIC, SHARDS, exact=True)

    async def ensure_events_topic(self) -> None:
        retention = {"retention.ms": str(EVENTS_RETENTION_MS)}
        await self._create(EVENTS_TOPIC, EVENTS_PARTITIONS, configs=retention)

    async def ensure_topic(self, topic: str, *, partitions: int, retention_ms: int) -> None:
        """A topic of the API's own (``wsched.revocations``), with a short retention."""
        await self._create(topic, partitions, configs={"retention.ms": str(retention_ms)})

    async def delete_pipeline_topic(self, pipeline_id: str) -> None:
        topic = pipeline_topic(pipeline_id)

        async def delete(admin: AIOKafkaAdminClient) -> None:
            response = await admin.delete_topics([topic], timeout_ms=self._timeout_ms)
            for name, code, *_ in response.topic_error_codes:
                if code not in (0, _UNKNOWN_TOPIC):
                    raise TopicError(f"deleting topic {name}: {for_code(code).__name__}")

        await self._with_admin(f"deleting topic {topic}", delete)

    async def partitions(self, topic: str) -> int | None:
        """The topic's partition count, or None when it does not exist (for tests, checks)."""

        async def describe(admin: AIOKafkaAdminClient) -> int | None:
            return await _partitions(admin, topic)

        return await self._with_admin(f"describing topic {topic}", describe)

    @property
    def _timeout_ms(self) -> int:
        return int(self._timeout_s * 1000)

    async def _create(
        self,
        topic: str,
        partitions: int,
        *,
        configs: dict[str, str] | None = None,
        exact: bool = False,
    ) -> None:
        """Create ``topic`` unless it exists, and wait until it is led; ``exact``: refuse
        one that exists with another number of partitions."""

        async def create(admin: AIOKafkaAdminClient) -> None:
            replicas = self._replication_factor or await _replicas(admin)
            new = NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=replicas,
                topic_configs=configs or {},
            )
            response = await admin.create_topics([new], timeout_ms=self._timeout_ms)
            for name, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = rest[0] if rest and rest[0] else ""
                    raise TopicError(
                        f"creating topic {name}: {for_code(code).__name__} {message}".strip()
                    )
            led = await _until_led(admin, topic)
            if exact and led != partitions:
                raise TopicError(
                    f"topic {topic} has {led} partitions, not {partitions}: it was made by "
                    "something else (a broker's auto.create.topics.enable, by hand); delete "
                    "it so that it is made again, or disable auto-creation"
                )

        await self._with_admin(f"creating topic {topic}", create)

    async def _with_admin(
        self, what: str, call: Callable[[AIOKafkaAdminClient], Awaitable[R]]
    ) -> R:
        if not self._bootstrap:
            raise TopicError(f"{what}: Kafka is not configured: set WSCHED_KAFKA_BOOTSTRAP")
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap, request_timeout_ms=self._timeout_ms
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await admin.start()
                return await call(admin)
        except TopicError:
            raise
        except Exception as err:  # aiokafka raises many types; all mean "not done"
            raise TopicError(f"{what} on {self._bootstrap}: {type(err).__name__}: {err}") from err
        finally:
            await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    [described] = await admin.describe_topics([topic])
    if described["error_code"] == _UNKNOWN_TOPIC:
        return None
    return len(described["partitions"])


async def _until_led(admin: AIOKafkaAdminClient, topic: str) -> int:
    """Wait until every partition of a new topic has a leader, so that a pipeline is only
    called ready once producing to it works (bounded by the caller's timeout); returns
    how many partitions it has."""
    while True:
        [described] = await admin.describe_topics([topic])
        partitions = described["partitions"]
        if (
            described["error_code"] == 0
            and partitions
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in partitions)
        ):
            return len(partitions)
        await asyncio.sleep(_LEADER_POLL_S)


async def _replicas(admin: AIOKafkaAdminClient) -> int:
    cluster = await admin.describe_cluster()
    return max(1, min(_MAX_REPLICATION, len(cluster.get("brokers", []))))


class MemoryTopicAdmin:
    """The :class:`TopicAdmin` in memory, for unit tests; ``fail`` makes every call raise."""

    def __init__(self) -> None:
        self.topics: dict[str, int] = {}
        self.fail: str | None = None

    def _check(self) -> None:
        if self.fail is not None:
            raise TopicError(self.fail)

    async def create_pipeline_topic(self, pipeline_id: str, partitions: int) -> None:
        self._check()
        self.topics.setdefault(pipeline_topic(pipeline_id), partitions)

    async def delete_pipeline_topic(self, pipeline_id: str) -> None:
        self._check()
        self.topics.pop(pipeline_topic(pipeline_id), None)

    async def ensure_placement_topic(self) -> None:
        self._check()
        self.topics.setdefault(PLACEMENT_TOPIC, SHARDS)

    async def ensure_shared_topic(self) -> None:
        self._check()
        self.topics.setdefault(SHARED_TOPIC, SHARDS)

    async def ensure_events_topic(self) -> None:
        self._check()
        self.topics.setdefault(EVENTS_TOPIC, EVENTS_PARTITIONS)
