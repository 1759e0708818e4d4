"""Live results (design note D6): the events topic's wire format, the API's waiters and
its Server-Sent Events streams. The Kafka adapters are in ``services/kafka/``."""
