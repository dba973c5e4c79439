"""The intake's doorbell on a real broker, Redis and intake (no worker: admission is what is watched).

With polls 2 s apart when idle, a request published through InferqClient is still admitted at once,
because the client rings the doorbell once the broker has the record and the idle intake waits on it.
"""

from __future__ import annotations

import threading
import time

import pytest

from producers.client import InferqClient
from schemas.messages import ResultStatus
from schemas.settings import Settings
from tests.stack import eventually, intake_only
from workers.store.doorbell import Doorbell


class RecordMetadata:
    """What kafka-python hands a send callback, as far as the doorbell reads it."""

    def __init__(self, topic, partition):
        self.topic, self.partition = topic, partition


QUIET_POLL_MS = 2_000.0


@pytest.fixture(scope="module")
def rare_polls(tmp_path_factory):
    base = Settings(
        kafka_session_timeout_ms=6_000,
        kafka_quiet_after_ms=0.0,  # quiet at once: the intake pauses up to QUIET_POLL_MS between polls
        kafka_quiet_poll_ms=QUIET_POLL_MS,
        log_ship=False,
    )
    with intake_only(base, tmp_path_factory.mktemp("doorbell")) as settings:
        yield settings


def test_a_ring_wakes_an_idle_intake_at_once(rare_polls):
    with InferqClient(rare_polls) as client:
        first = client.submit("embed", "all-MiniLM-L6-v2", "wake up")  # the group is joined by now
        eventually(lambda: client.result(first), 60, "the first request admitted")
        pickups_ms = []
        for i in range(3):
            time.sleep(QUIET_POLL_MS / 1000 + 0.5)  # the intake is at its longest pause
            rid = client.submit("embed", "all-MiniLM-L6-v2", f"request {i}")
            result = eventually(lambda rid=rid: client.result(rid), 30, f"request {i} admitted")
            assert result.status is ResultStatus.QUEUED  # no worker: admitted, and no further
            pickups_ms.append(result.timings.received_ms - result.timings.published_ms)
    # polls alone would pick each up anywhere in a 2 s pause (all three under 0.5 s: 1 in 64)
    assert max(pickups_ms) < 500, pickups_ms


def test_rings_coalesce_and_a_wait_without_one_times_out(rare_polls):
    bell = Doorbell(rare_polls.model_copy(update={"key_prefix": "doorbell-unit"}))
    try:
        for _ in range(5):
            bell.ring(RecordMetadata("inferq.requests", 0))
        assert bell.wait([0], 1.0, threading.Event())
        assert not bell.wait([0], 0.05, threading.Event())  # the five rings were one
    finally:
        bell.close()


def test_a_ring_wakes_only_the_intake_that_owns_the_records_partition(rare_polls):
    bell = Doorbell(rare_polls.model_copy(update={"key_prefix": "doorbell-partitions"}))
    try:
        bell.ring(RecordMetadata("inferq.requests", 2))
        assert not bell.wait([0, 1], 0.05, threading.Event())  # another intake's partitions
        assert bell.wait([1, 2], 1.0, threading.Event())  # kept for the owner
        bell.ring(None)  # no metadata (a failed send): nothing to ring
        assert not bell.wait([0, 1, 2], 0.05, threading.Event())
    finally:
        bell.close()


def test_without_redis_a_wait_is_a_pause_and_a_ring_is_dropped(rare_polls):
    gone = rare_polls.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    bell = Doorbell(gone)
    try:
        bell.ring(RecordMetadata("inferq.requests", 0))  # never raises
        started = time.monotonic()
        assert not bell.wait([0], 0.2, threading.Event())
        assert time.monotonic() - started >= 0.2
    finally:
        bell.close()


class CountingDoorbell(Doorbell):
    """The real doorbell, counting its rings."""

    rings = 0

    def ring(self, metadata: object) -> None:
        self.rings += 1
        super().ring(metadata)


def test_a_burst_rings_once_per_batch_and_every_record_is_still_picked_up(rare_polls):
    """kafka-python acknowledges records a batch at a time: the client rings once per batch, not
    once per record, and the last record of a burst is still picked up at once."""
    with InferqClient(rare_polls) as client:
        first = client.submit("embed", "all-MiniLM-L6-v2", "wake up")
        eventually(lambda: client.result(first), 60, "the first request admitted")
        bell = client._doorbell = CountingDoorbell(rare_polls)
        time.sleep(QUIET_POLL_MS / 1000 + 0.5)  # the intake is at its longest pause
        rids = [client.submit("embed", "all-MiniLM-L6-v2", f"burst {i}") for i in range(200)]
        client.flush()
        last = eventually(lambda: client.result(rids[-1]), 30, "the burst's last request admitted")
        assert last.timings.received_ms - last.timings.published_ms < 1_000
        assert all(client.result(rid) is not None for rid in rids)
    assert 1 <= bell.rings < len(rids) / 4, bell.rings
