"""Where a pipeline's events live: its topic, and its shard of the placement space.

Shared by the API (which creates topics and announces pipelines) and the scheduler (which
owns shards and consumes pipeline topics), so that both compute the same names.

A pipeline's records go either to a topic of its own (``dedicated``: keyed by task id
over its partitions) or to the shared topic (``shared``, design D3): partition
``shard_of(pipeline)`` of ``wsched.shared``, keyed by task id, with the pipeline's id in
the ``wsched-pipeline`` header, so that the shard's owner is its only reader and all of a
pipeline's records stay in order in one partition.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.pipeline.model import GrainKey

#: Fixed size of the shard space; the placement topic has one partition per shard.
#: Changing it moves every pipeline to another shard: it is part of the wire format.
SHARDS = 64
#: The small topic whose partition ``shard`` carries the placement events of that shard.
PLACEMENT_TOPIC = "wsched.placement"
#: Pipeline topics are named by the pipeline's immutable id, never by its human name:
#: Kafka deletes topics asynchronously, so a re-created pipeline must not collide.
PIPELINE_TOPIC_PREFIX = "wsched.p."
#: The topic small pipelines share: one partition per shard (``SHARDS``).
SHARED_TOPIC = "wsched.shared"
#: The header naming a shared topic record's pipeline (its id, UTF-8).
PIPELINE_HEADER = "wsched-pipeline"


class TopicMode(StrEnum):
    """Chosen at a pipeline's creation, never changed."""

    #: A topic of its own, ``wsched.p.<id>`` (for big pipelines; partitions and slices).
    DEDICATED = "dedicated"
    #: The shard's partition of ``wsched.shared`` (for small ones: 10,000 pipelines open
    #: 64 partitions, not 20,000).
    SHARED = "shared"


@dataclass(frozen=True)
class Route:
    """Where a pipeline's records are produced."""

    pipeline_id: str
    mode: TopicMode = TopicMode.DEDICATED

    @property
    def shared(self) -> bool:
        return self.mode is TopicMode.SHARED

    @property
    def topic(self) -> str:
        return SHARED_TOPIC if self.shared else pipeline_topic(self.pipeline_id)

    @property
    def partition(self) -> int | None:
        """The partition to produce to; None: the producer's own rule (by key)."""
        return shard_of(self.pipeline_id) if self.shared else None

    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]:
        return ((PIPELINE_HEADER, self.pipeline_id.encode()),) if self.shared else ()


def shard_of(pipeline_id: str) -> int:
    """The pipeline's shard: stable across processes and Python versions (not ``hash``)."""
    return zlib.crc32(pipeline_id.encode()) % SHARDS


def shard_of_grain(key: GrainKey) -> int:
    """The placement shard of a grain: its pipeline's for slice 0, and the next ones for
    further slices, so the slices of one pipeline usually land on different replicas."""
    return (shard_of(key.pipeline_id) + key.slice) % SHARDS


def pipeline_topic(pipeline_id: str) -> str:
    return f"{PIPELINE_TOPIC_PREFIX}{pipeline_id}"


def pipeline_id_of(topic: str) -> str | None:
    """The pipeline id a topic belongs to, or None for a topic that is not a pipeline's."""
    if not topic.startswith(PIPELINE_TOPIC_PREFIX):
        return None
    return topic.removeprefix(PIPELINE_TOPIC_PREFIX) or None
