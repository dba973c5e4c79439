"""The intake's Kafka consumer: how it joins the intake group, and how it leaves it on a stop."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import MemberToRemove

from schemas.connections import kafka_client_options, kafka_options
from schemas.naming import requests_topic
from schemas.settings import Settings

log = logging.getLogger(__name__)


def new_consumer(settings: Settings) -> KafkaConsumer:
    """The intake's consumer: a (static, when configured) member of the intake group."""
    return KafkaConsumer(
        requests_topic(settings),
        **kafka_client_options(settings),
        group_id=settings.kafka_group_id,
        group_instance_id=settings.kafka_group_instance_id or None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka_max_poll_records,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.kafka_poll_timeout_ms,
        max_partition_fetch_bytes=max(1_048_576, settings.kafka_max_message_bytes * 2),
    )


def leave_group(settings: Settings) -> None:
    """A static member does not leave its group on close (so a restart keeps its partitions);
    on a deliberate stop it is removed explicitly (KIP-345), so the others take over at once
    instead of after the session timeout."""
    instance = settings.kafka_group_instance_id
    if not instance:
        return
    try:
        admin = KafkaAdminClient(**kafka_options(settings), request_timeout_ms=5_000)
        try:
            admin.remove_group_members(settings.kafka_group_id, [MemberToRemove(group_instance_id=instance)])
        finally:
            admin.close()
    except Exception as e:  # the broker may be gone too; the session timeout then does it
        log.warning("could not leave group %s as %s: %r", settings.kafka_group_id, instance, e)
