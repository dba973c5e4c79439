"""Backpressure on a real broker, Redis and intake, with no worker (so nothing admitted finishes).

At the bound the intake pauses; what waits at the head of the backlog and needs no capacity —
requests already past their deadline, invalid records — is still answered while it is paused, and
everything behind it stays in Kafka, unread and uncommitted.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import redis

from producers.client import InferqClient
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, intake_only
from workers.store.presence import advertise

BOUND = 5


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    base = Settings(
        kafka_partitions=1,  # one partition: the backlog's order is the publish order
        kafka_session_timeout_ms=6_000,
        backpressure_max_inflight=BOUND,
        log_ship=False,
    )
    with intake_only(base, tmp_path_factory.mktemp("backpressure")) as settings:
        # backpressure counts only served models: one worker "serves" it and never takes a message
        advertise(
            redis.Redis.from_url(settings.redis_url), settings, "idle-worker", ["all-MiniLM-L6-v2"], 3_600
        )
        yield settings


def test_expired_and_invalid_records_at_the_head_are_answered_while_paused(paused):
    with InferqClient(paused) as client:
        filling = [client.submit("embed", "all-MiniLM-L6-v2", f"fills the bound {i}") for i in range(BOUND)]
        client.flush()
        eventually(lambda: client.store.in_flight() == BOUND, what="the bound reached")
        soon = datetime.now(timezone.utc) + timedelta(seconds=1.5)
        due = [client.submit("embed", "all-MiniLM-L6-v2", f"due soon {i}", deadline=soon) for i in range(6)]
        bad = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="x").request_id
        client.publish_raw(bad, b"{not json")
        behind = client.submit("embed", "all-MiniLM-L6-v2", "behind them, no deadline")
        client.flush()

        results = client.wait_all(due, timeout_s=30)
        for r in results.values():
            assert r.status is ResultStatus.EXPIRED and r.error.code is ErrorCode.DEADLINE_EXPIRED
            assert "waited in Kafka" in r.error.message
        assert dead_letters(paused, {bad}, by_record_key=True)[bad].error.code is ErrorCode.INVALID_JSON
        assert client.result(behind) is None  # still in Kafka: the intake is paused
        assert client.store.in_flight() == BOUND
        assert {client.result(rid).status for rid in filling} == {ResultStatus.QUEUED}
