"""One request id twice in one poll, on a real broker, Redis and intake (no worker: what the intake
hands to Celery stays in the broker's lists, where it is read back).

The intake admits a poll in one ADMIT call and used to key the requests' hand-offs by scoped id: a
second record under the same id (another payload, refused as a conflict) overwrote the first's, so
the admitted record's Celery message carried the refused payload, and a retry of the same payload
in the same poll was sent twice.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
import redis

from producers.client import InferqClient
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import model_queue, result_key, scoped_id
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, intake_only

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def intake(tmp_path_factory):
    base = Settings(
        kafka_quiet_after_ms=0.0,  # quiet at once: the intake polls every 2 s, so records
        kafka_quiet_poll_ms=2_000.0,  # published together are read in one poll
        intake_doorbell=False,
        log_ship=False,
    )
    with intake_only(base, tmp_path_factory.mktemp("duplicates")) as settings:
        yield settings


def celery_items(settings: Settings, model: str) -> list[dict[str, Any]]:
    """The work items of every message waiting in ``model``'s Celery queue (all priority steps)."""
    broker = redis.Redis.from_url(settings.celery_broker_url)
    queue = model_queue(settings, model)
    items: list[dict[str, Any]] = []
    for key in broker.keys(queue.encode() + b"*"):
        if broker.type(key) != b"list":
            continue
        for raw in broker.lrange(key, 0, -1):
            message = json.loads(raw)
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = orjson.loads(body)[0]
            items += args[0]
    return items


def items_of(settings: Settings, rid: str) -> list[dict[str, Any]]:
    return [i for i in celery_items(settings, MODEL) if i["request"]["request_id"] == rid]


def test_a_conflicting_payload_in_the_same_poll_does_not_replace_the_admitted_one(intake):
    with InferqClient(intake) as client:
        warm = client.submit("embed", MODEL, "the group is joined")
        eventually(lambda: client.result(warm), 60, "the first request admitted")
        first = InferenceRequest(task="embed", model=MODEL, inputs="the payload admitted")
        other = first.model_copy(update={"inputs": "another payload under the same id"})
        again = InferenceRequest(task="embed", model=MODEL, inputs="sent twice in one poll")
        for request in (first, other, again, again):
            client.publish(request)
        client.flush()
        dead_letters(intake, {first.request_id})  # the conflict is refused: the poll is done
        eventually(lambda: items_of(intake, again.request_id), 30, "the retried request handed off")
        result = client.result(first.request_id)
        assert result is not None and result.status is ResultStatus.QUEUED
        sent = items_of(intake, first.request_id)
        assert [i["request"]["inputs"] for i in sent] == ["the payload admitted"]
        kept = client.store.client.hget(result_key(intake, scoped_id(None, first.request_id)), "handoff")
        assert json.loads(kept)["item"]["request"]["inputs"] == "the payload admitted"
        assert len(items_of(intake, again.request_id)) == 1  # once per poll, however often it was read
