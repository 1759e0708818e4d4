"""The shared topic (design D3) as the topic admin makes it on the real broker: one
partition per shard, every partition led, made once; one of another size is refused."""

from __future__ import annotations

import pytest

from services.kafka import admin as admin_module
from services.kafka.admin import KafkaTopicAdmin, TopicError
from services.placement import SHARDS

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_topic(monkeypatch: pytest.MonkeyPatch, kafka_topic: str) -> str:
    """This test's own topic stands in for ``wsched.shared``, which other tests of the
    session share."""
    monkeypatch.setattr(admin_module, "SHARED_TOPIC", kafka_topic)
    return kafka_topic


async def test_the_shared_topic_has_a_partition_per_shard_and_is_made_once(
    kafka_bootstrap: str, shared_topic: str
) -> None:
    admin = KafkaTopicAdmin(bootstrap=kafka_bootstrap)
    await admin.ensure_shared_topic()
    await admin.ensure_shared_topic()  # idempotent
    assert await admin.partitions(shared_topic) == SHARDS


async def test_a_shared_topic_of_another_size_is_refused_saying_why(
    kafka_bootstrap: str, shared_topic: str
) -> None:
    admin = KafkaTopicAdmin(bootstrap=kafka_bootstrap)
    # As a broker's auto-creation would make it, when a client asked for it first.
    await admin.ensure_topic(shared_topic, partitions=1, retention_ms=60_000)
    with pytest.raises(TopicError, match=f"{shared_topic} has 1 partitions, not {SHARDS}"):
        await admin.ensure_shared_topic()
