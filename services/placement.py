"""Where a pipeline's events live: its topic, and its shard of the placement space.

Shared by the API (which creates topics and announces pipelines) and the scheduler (which
owns shards and consumes pipeline topics), so that both compute the same names.
"""

from __future__ import annotations

import zlib

#: Fixed size of the shard space; the placement topic has one partition per shard.
#: Changing it moves every pipeline to another shard: it is part of the wire format.
SHARDS = 64
#: The small topic whose partition ``shard`` carries the placement events of that shard.
PLACEMENT_TOPIC = "wsched.placement"
#: Pipeline topics are named by the pipeline's immutable id, never by its human name:
#: Kafka deletes topics asynchronously, so a re-created pipeline must not collide.
PIPELINE_TOPIC_PREFIX = "wsched.p."


def shard_of(pipeline_id: str) -> int:
    """The pipeline's shard: stable across processes and Python versions (not ``hash``)."""
    return zlib.crc32(pipeline_id.encode()) % SHARDS


def pipeline_topic(pipeline_id: str) -> str:
    return f"{PIPELINE_TOPIC_PREFIX}{pipeline_id}"


def pipeline_id_of(topic: str) -> str | None:
    """The pipeline id a topic belongs to, or None for a topic that is not a pipeline's."""
    if not topic.startswith(PIPELINE_TOPIC_PREFIX):
        return None
    return topic.removeprefix(PIPELINE_TOPIC_PREFIX) or None
