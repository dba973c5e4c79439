"""The intake's Kafka consumer: how it joins the intake group, and how it leaves it on a stop.

Importing this module also mends one flaw of kafka-python (:func:`drain_failed_batches`): a batch
it fails to unpack must not be kept as the next one in line, or every later ``poll()`` loops on it.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import MemberToRemove
from kafka.consumer.fetcher import Fetcher

from schemas.connections import confluent_options, kafka_client_options, kafka_options
from schemas.naming import requests_topic
from schemas.settings import Settings

log = logging.getLogger(__name__)


def drain_failed_batches() -> None:
    """Make a fetched partition's records drop out once unpacking them raised.

    kafka-python (3.0) unpacks a fetched batch lazily in ``PartitionRecords.take``; when that raises
    (``CorruptRecordError`` for a header name that is not UTF-8, ``UnsupportedCodecError`` for a
    codec without its library) the records object stays the fetcher's next in line with a dead
    iterator, and the next ``poll()`` spins for ever inside the client taking nothing from it (when
    records came before it in the same poll the error is even dropped, so nothing is ever raised):
    the intake stopped on every partition while its process stayed up. Drained, the partition is
    fetched again from its position, the error is raised again by the next poll, and the intake
    skips the record (:mod:`workers.intake.unreadable`). Idempotent."""
    records = Fetcher.PartitionRecords
    if getattr(records.take, "_inferq_drains", False):
        return
    take = records.take

    def take_or_drain(self: Any, n: int | None = None) -> Any:
        try:
            return take(self, n)
        except Exception:
            self.drain()
            raise

    take_or_drain._inferq_drains = True  # type: ignore[attr-defined]
    records.take = take_or_drain


drain_failed_batches()


class PlainConsumer(KafkaConsumer):
    """kafka-python's consumer, with the two calls the intake makes around its idle waits
    (:class:`~workers.intake.confluent_consumer.ConfluentConsumer` stops fetching there;
    kafka-python fetches only inside ``poll``, so for it they are nothing), and :meth:`rejoin`."""

    def idle(self) -> None:
        """The intake is about to wait for work."""

    def wake(self) -> None:
        """The intake is about to poll again."""

    def rejoin(self, timeout_ms: int) -> bool:
        """Finish joining the group after a commit was refused for a rebalance; True once stable.

        kafka-python (3.0.12) can leave a join half done for good: a rejoin it starts because its
        metadata changed (the first join after a start sees no partitions yet) runs past a short
        ``poll`` timeout, completes in the background, and the assignment it made clears the
        reason to rejoin, so no later ``poll`` takes the join's result. The member stays
        ``REBALANCING``, keeps fetching from its old positions and has every commit refused, for
        as long as it lives (seen in 4 of 6 intakes started in place of a killed one). Asked to
        rejoin, it joins again and waits for it here, at most ``timeout_ms``."""
        coordinator = self._coordinator
        if coordinator.generation_if_stable() is not None:
            return True
        coordinator.request_rejoin()
        return bool(coordinator.ensure_active_group(timeout_ms=timeout_ms))


def new_consumer(settings: Settings) -> Any:
    """The intake's consumer: a (static, when configured) member of the intake group, from the
    client ``INFERQ_KAFKA_CLIENT`` names; kafka-python's interface either way."""
    fetch_bytes = max(1_048_576, settings.kafka_max_message_bytes * 2)
    if settings.kafka_client == "confluent":
        from workers.intake.confluent_consumer import ConfluentConsumer

        config: dict[str, Any] = {
            **confluent_options(settings),
            "group.id": settings.kafka_group_id,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.kafka_session_timeout_ms,
            "heartbeat.interval.ms": settings.kafka_heartbeat_interval_ms,
            "fetch.wait.max.ms": settings.kafka_poll_timeout_ms,
            "max.partition.fetch.bytes": fetch_bytes,
            "fetch.max.bytes": max(fetch_bytes, 52_428_800),
        }
        if settings.kafka_group_instance_id:
            config["group.instance.id"] = settings.kafka_group_instance_id
        return ConfluentConsumer(config, [requests_topic(settings)])
    return PlainConsumer(
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
        max_partition_fetch_bytes=fetch_bytes,
    )


def new_reader(settings: Settings) -> Any:
    """A consumer without a group, assigned partitions by hand (read-backs of the truncation watch,
    the search for unreadable records), from the client ``INFERQ_KAFKA_CLIENT`` names."""
    fetch_bytes = max(1_048_576, settings.kafka_max_message_bytes * 2)
    if settings.kafka_client == "confluent":
        from workers.intake.confluent_consumer import ConfluentConsumer

        return ConfluentConsumer(
            {
                **confluent_options(settings),
                "group.id": f"{settings.kafka_group_id}.reader",  # never joined: assign() only
                "max.partition.fetch.bytes": fetch_bytes,
                "auto.offset.reset": "earliest",
            }
        )
    return KafkaConsumer(
        **kafka_client_options(settings), enable_auto_commit=False, max_partition_fetch_bytes=fetch_bytes
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
