"""A requests log cut back below the intake's position is read again (workers.intake.truncation).

The broker-restart drill lost requests this way: the broker lost the tail of a partition the intake
had already read and committed, the next records took the lost offsets again, and the intake,
fetching from its old position, skipped them. Reproduced here without luck: with the intake
stopped (SIGSTOP, shorter than its session), the requests topic is deleted and made again, and more
records than the intake had read are written into it; the intake resumes at its old position.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from ops.stack import Stack
from schemas.connections import kafka_options
from schemas.naming import requests_topic
from schemas.settings import Settings
from tests.stack import eventually, intake_only, publish_embeds
from workers.store.presence import advertise
from workers.store.store import ResultStore


@pytest.fixture(scope="module")
def one_partition(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    base = settings.model_copy(update={"kafka_partitions": 1, "kafka_session_timeout_ms": 30_000})
    with intake_only(base, tmp_path_factory.mktemp("truncation")) as s:
        yield s


def cut_and_refill(s: Settings, n: int) -> list[str]:
    """With the intake stopped, make the requests topic again and write ``n`` records into it (their
    offsets start at 0 again); returns their ids."""
    stack = Stack(s)
    stack.kill("intake", signal.SIGSTOP)
    try:
        admin = KafkaAdminClient(**kafka_options(s), request_timeout_ms=10_000)
        try:
            admin.delete_topics([requests_topic(s)])
            eventually(lambda: requests_topic(s) not in admin.list_topics(), what="the topic gone")
            admin.create_topics([NewTopic(requests_topic(s), num_partitions=1, replication_factor=1)])
        finally:
            admin.close()
        return publish_embeds(s, n, "after the cut")
    finally:
        stack.kill("intake", signal.SIGCONT)


def test_records_that_take_lost_offsets_again_are_read(one_partition: Settings) -> None:
    s = one_partition
    store = ResultStore.from_settings(s)

    def admitted(ids: list[str]) -> bool:
        return all(r is not None for r in store.get_many(ids).values())

    first = publish_embeds(s, 20, "before the cut")
    eventually(lambda: admitted(first), what="the first 20 admitted")
    time.sleep(0.5)  # the intake commits and polls on: its position is now 20
    second = cut_and_refill(s, 30)  # offsets 0-29: 0-19 are the intake's old ones
    missing = lambda: [rid for rid, r in store.get_many(second).items() if r is None]  # noqa: E731
    eventually(lambda: not missing(), timeout_s=30, what="every record written after the cut admitted")


@pytest.fixture(scope="module")
def bounded(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    """One partition, and backpressure at 20 requests in flight (nothing ends them: no worker)."""
    base = settings.model_copy(
        update={"kafka_partitions": 1, "kafka_session_timeout_ms": 30_000, "backpressure_max_inflight": 20}
    )
    with intake_only(base, tmp_path_factory.mktemp("truncation-paused")) as s:
        yield s


def test_a_cut_found_while_backpressure_holds_the_partition_is_read_again_when_it_resumes(
    bounded: Settings,
) -> None:
    """The drills lost requests this way: after the broker restart the backlog paused the intake,
    the watch found the cut between the empty polls of the pause and rewound the consumer, and the
    resume sought the position the partition had been paused at, skipping the rewound stretch."""
    s, stack = bounded, Stack(bounded)
    store = ResultStore.from_settings(s)
    advertise(store.client, s, "stand-in-worker", ["all-MiniLM-L6-v2"], 600.0)  # counted by backpressure
    first = publish_embeds(s, 20, "fills the bound")
    eventually(lambda: all(store.get_many(first).values()), what="the first 20 admitted")
    eventually(lambda: "partitions paused" in stack.tail("intake", 200), what="the intake paused")
    second = cut_and_refill(s, 30)  # offsets 0-29; the paused partition would resume at 20
    eventually(lambda: "was cut back" in stack.tail("intake", 200), what="the cut found while paused")
    for rid in first:  # the bound frees up: the partition resumes
        store.cancel(rid)
    # what took the intake's old offsets 0-19 is read (and fills the bound again; 20-29 wait in Kafka)
    missing = lambda: [rid for rid, r in store.get_many(second[:20]).items() if r is None]  # noqa: E731
    eventually(lambda: not missing(), timeout_s=30, what="the records at the lost offsets admitted")
