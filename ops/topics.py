"""Create the pipeline's Kafka topics (idempotent)."""

from __future__ import annotations

import contextlib

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.connections import kafka_options
from schemas.naming import deadletter_topic, requests_topic, stream_topic
from schemas.settings import Settings
from workers.intake.retention import topic_retention_configs


def ensure_topics(settings: Settings) -> list[str]:
    """Create the requests, dead-letter and stream topics (and ``INFERQ_RESULTS_TOPIC`` when set)
    where missing, keeping records no longer than results (``retention.ms`` = ``INFERQ_RESULT_TTL_S``:
    a replay from ``earliest`` never reaches past duplicate detection); returns the topics created."""
    admin = KafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        existing = set(admin.list_topics())
        wanted = {
            requests_topic(settings): settings.kafka_partitions,
            deadletter_topic(settings): 1,
            stream_topic(settings): settings.kafka_partitions,
        }
        if settings.results_topic:  # every terminal result, key = request id (workers.delivery)
            wanted[settings.results_topic] = settings.kafka_partitions
        configs = topic_retention_configs(settings)
        new = [
            NewTopic(t, num_partitions=n, replication_factor=1, topic_configs=configs)
            for t, n in wanted.items()
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process made it meanwhile
                admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()
