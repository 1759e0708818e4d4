"""Kafka adapters: topic administration and the event producer, each behind a port with an
in-memory implementation for unit tests."""

from services.kafka.admin import KafkaTopicAdmin, MemoryTopicAdmin, TopicAdmin, TopicError
from services.kafka.producer import (
    BrokerUnavailable,
    EventProducer,
    KafkaProducer,
    MemoryProducer,
    OutgoingTask,
)

__all__ = [
    "BrokerUnavailable",
    "EventProducer",
    "KafkaProducer",
    "KafkaTopicAdmin",
    "MemoryProducer",
    "MemoryTopicAdmin",
    "OutgoingTask",
    "TopicAdmin",
    "TopicError",
]
