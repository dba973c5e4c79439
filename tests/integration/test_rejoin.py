"""An intake started in place of a killed one commits what it reads (workers.intake.consumer.rejoin).

kafka-python (3.0.12) left the replacement's second group join half done: the member stayed
``REBALANCING`` for good, read and handed off records from its old positions and had every commit
refused (seen in the drills: 1,287 refusals in a row; the group's lag never fell, and the
backpressure bound was passed because the refused polls' admissions went uncounted). Here, on the
real broker: kill -9 the intake (a static member), start it again, keep publishing, and the group's
committed offsets must reach the end of every partition.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from ops.stack import Stack
from schemas.connections import kafka_options
from schemas.naming import requests_topic
from schemas.settings import Settings
from tests.stack import eventually, intake_only, publish_embeds
from workers.store.store import ResultStore


@pytest.fixture(scope="module")
def intake_stack(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    base = settings.model_copy(update={"kafka_partitions": 3, "kafka_session_timeout_ms": 6_000})
    with intake_only(base, tmp_path_factory.mktemp("rejoin")) as s:
        yield s


def test_an_intake_started_in_place_of_a_killed_one_commits_what_it_reads(intake_stack: Settings) -> None:
    s, stack = intake_stack, Stack(intake_stack)
    store = ResultStore.from_settings(s)
    admin = KafkaAdminClient(**kafka_options(s), request_timeout_ms=10_000)
    ends = KafkaConsumer(**kafka_options(s))
    try:
        first = publish_embeds(s, 30, "before the kill")
        eventually(lambda: all(store.get_many(first).values()), what="the first 30 admitted")
        stack.kill("intake", signal.SIGKILL)
        eventually(lambda: stack.pid("intake") is None, what="the intake gone")
        stack.up(only=["intake"])
        later: list[str] = []
        for n in range(25):  # records keep coming while the replacement joins (and rejoins)
            later += publish_embeds(s, 4, f"after the kill {n}")
            time.sleep(0.2)
        eventually(lambda: all(store.get_many(later).values()), what="the later 100 admitted")
        topic = requests_topic(s)
        tps = [TopicPartition(topic, p) for p in range(3)]

        def lag() -> int:
            committed = admin.list_group_offsets({s.kafka_group_id: tps}).get(s.kafka_group_id, {})
            last = ends.end_offsets(tps)
            return sum(last[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)

        eventually(lambda: lag() == 0, timeout_s=30, what="the group's commits at the end of every partition")
    finally:
        admin.close()
        ends.close()
