"""Reading the dead-letter topic back: what the drills and the integration tests check letters with."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer
from pydantic import ValidationError

from schemas.connections import kafka_options
from schemas.messages import DeadLetter
from schemas.naming import deadletter_topic
from schemas.settings import Settings


def read_dead_letters(
    settings: Settings, want: set[str], *, by_record_key: bool = False, timeout_s: float = 60.0
) -> dict[str, DeadLetter]:
    """Read the dead-letter topic from the start (a group of its own) until every name in ``want``
    is seen, or ``timeout_s`` passes; returns the letters seen, by name.

    Letters are named by their request id (or, without one, their payload), or with
    ``by_record_key`` by the Kafka key the bad record was published with. A record on the topic
    that is not a DeadLetter is skipped (the topic is shared; the caller asserts what it wants).
    """
    consumer = KafkaConsumer(
        deadletter_topic(settings),
        **kafka_options(settings),
        group_id=f"letters-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    found: dict[str, DeadLetter] = {}
    give_up = time.monotonic() + timeout_s
    try:
        while not want <= found.keys() and time.monotonic() < give_up:
            for records in consumer.poll(timeout_ms=200).values():
                for rec in records:
                    try:
                        letter = DeadLetter.model_validate_json(rec.value)
                    except ValidationError:
                        continue
                    if by_record_key:
                        name = rec.key.decode("utf-8", "replace") if rec.key else ""
                    else:
                        name = letter.request_id or letter.payload
                    found[name] = letter
    finally:
        consumer.close()
    return found
