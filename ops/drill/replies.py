"""The reply-topics drills: the worker killed mid-batch (or the delivery service killed while it
publishes) while every request names a reply topic, then the topic read back: each accepted request
must have exactly one distinct result there.

Delivery is at least once: a record may repeat (a delivery process that died after the broker
took a record and before it acknowledged the outbox entry sends it again), but every record of one
key must hold the same bytes, equal to the result stored in Redis. So a reader that dedups on the
key (the request id) sees each result once. ``drill.json`` gets a ``reply_topics`` section.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition

from ops.drill.faults import FAULTS, Fault
from schemas.connections import kafka_options
from schemas.settings import Settings

REPLIES = "reply-topics"  # the worker killed mid-batch (``inferq-ops drill --only reply-topics``)
REPLIES_DELIVERY = "reply-topics-delivery-kill"  # the delivery service killed while it publishes
TOPIC = "drill.replies"  # their reply topic (the drill stack allows it: ops.drill.run.drill_settings)
DELIVERY_KILL = Fault("delivery", signal.SIGKILL, "kill -9 the delivery service while it publishes replies")
REPLY_DRILLS: dict[str, Fault] = {REPLIES: FAULTS["worker-kill"], REPLIES_DELIVERY: DELIVERY_KILL}


def make_reply_topic(settings: Settings, partitions: int = 3) -> None:
    """The reply topic is the user's to create: the drill creates it before publishing."""
    admin = KafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def read_replies(
    settings: Settings, want: set[str], timeout_s: float
) -> tuple[dict[str, list[bytes]], float]:
    """Every record of the reply topic, values by key, read from the start until every key in
    ``want`` is there and the end offsets are reached (or ``timeout_s``); and the seconds it took."""
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    t0 = time.monotonic()
    found: dict[str, list[bytes]] = {}
    try:
        tps = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        while time.monotonic() - t0 < timeout_s:
            for records in consumer.poll(timeout_ms=500, max_records=5_000).values():
                for r in records:
                    found.setdefault(r.key.decode() if r.key else "", []).append(r.value)
            if want <= found.keys():
                ends = consumer.end_offsets(tps)
                if all(consumer.position(tp) >= ends[tp] for tp in tps):
                    break
        return found, time.monotonic() - t0
    finally:
        consumer.close()


def reply_report(
    accepted: Iterable[str], stored: dict[str, bytes | None], found: dict[str, list[bytes]], read_s: float
) -> dict[str, Any]:
    """What the reply topic holds against the accepted requests: distinct keys, repeats, keys whose
    records differ, records that differ from the Redis result, and the verdict."""
    ids = set(accepted)
    mine = {k: v for k, v in found.items() if k in ids}
    differing = sorted(k for k, v in mine.items() if len(set(v)) > 1)
    not_redis = sorted(k for k, v in mine.items() if stored.get(k) is None or v[0] != stored[k])
    records = sum(len(v) for v in mine.values())
    missing = ids - mine.keys()
    return {
        "topic": TOPIC,
        "requests": len(ids),
        "records": records,
        "distinct_keys": len(mine),
        "missing": len(missing),
        "repeated_records": records - len(mine),
        "keys_with_differing_values": len(differing),
        "values_not_equal_to_redis": len(not_redis),
        "read_s": round(read_s, 1),
        "examples": {"missing": sorted(missing)[:5], "differing": differing[:5], "not_redis": not_redis[:5]},
        "ok": not missing and not differing and not not_redis,
    }
