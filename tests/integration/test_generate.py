"""Task generate on the real stack: Kafka in, continuous batching in the Celery worker, Redis out.

The session stack's worker serves tiny-lm (the default worker models). Requests are published to
Kafka; their results are read back from Redis while they run (the text grows) and once they end.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
from kafka import KafkaConsumer

from schemas.errors import ErrorCode
from schemas.messages import FinishReason, InferenceRequest, ResultStatus, StreamChunk
from schemas.naming import stream_topic
from tests.stack import dead_letters, eventually

MODEL = "tiny-lm"


def generate(client, prompt, **params):
    return client.submit("generate", MODEL, prompt, generation=params)


def running_with_text(client, rid, min_tokens=1):
    def check():
        r = client.result(rid)
        return (
            r
            if r and r.status is ResultStatus.RUNNING and r.outputs and r.outputs[0].tokens >= min_tokens
            else None
        )

    return eventually(check, timeout_s=60, what=f"{rid} running with {min_tokens}+ tokens")


def test_a_generation_streams_into_redis_and_finishes(client):
    rid = generate(client, "the weather in lisbon is", max_new_tokens=300)
    first = running_with_text(client, rid)
    later = running_with_text(client, rid, min_tokens=first.outputs[0].tokens + 5)
    assert later.outputs[0].text.startswith(first.outputs[0].text)  # it grows, never rewrites
    assert later.outputs[0].finish_reason is None
    done = client.wait(rid, timeout_s=120)
    assert done.status is ResultStatus.DONE and done.model_version.startswith("tiny-lm@")
    (out,) = done.outputs
    assert out.tokens == 300 and out.finish_reason is FinishReason.LENGTH
    assert out.text.startswith(later.outputs[0].text)
    t = done.timings
    assert t.published_ms <= t.received_ms <= t.batch_start_ms <= t.first_token_ms <= t.done_ms


def test_greedy_is_repeatable_and_a_stop_sequence_cuts_the_text(client):
    prompt = "i want to talk to a human about my order"
    a, b = (generate(client, prompt, max_new_tokens=24) for _ in range(2))
    ra, rb = client.wait(a, 60), client.wait(b, 60)
    full = ra.outputs[0].text
    assert full == rb.outputs[0].text and len(full.split()) > 4  # greedy: same text whatever shares the batch
    stop = full.split()[3]
    rc = client.wait(generate(client, prompt, max_new_tokens=24, stop=[stop]), 60)
    assert rc.outputs[0].finish_reason is FinishReason.STOP
    assert rc.outputs[0].text == full[: full.index(stop)]


def test_requests_join_and_leave_the_running_batch(client):
    long_id = generate(client, "a long story about the sea", max_new_tokens=400)
    running_with_text(client, long_id, min_tokens=10)
    short_ids = [generate(client, f"short question {i}", max_new_tokens=8) for i in range(3)]
    shorts = client.wait_all(short_ids, timeout_s=60)
    long_now = client.result(long_id)
    assert long_now.status is ResultStatus.RUNNING  # the short ones joined it and left before it ended
    for r in shorts.values():
        assert r.status is ResultStatus.DONE and r.outputs[0].tokens == 8
        assert r.timings.batch_size >= 2  # they joined a batch that was already running
    assert client.wait(long_id, 120).outputs[0].tokens == 400


def test_cancel_stops_a_running_generation_and_keeps_its_text(client, settings):
    rid = generate(client, "tell me everything", max_new_tokens=500)
    running_with_text(client, rid, min_tokens=5)
    assert client.cancel(rid) is ResultStatus.RUNNING  # being stopped
    res = client.wait(rid, 30)
    assert res.status is ResultStatus.CANCELLED and res.error.code is ErrorCode.CANCELLED
    (out,) = res.outputs
    assert out.finish_reason is FinishReason.CANCELLED and 5 <= out.tokens < 500 and out.text

    other = generate(client, "and now over http", max_new_tokens=500)
    running_with_text(client, other)
    answer = httpx.delete(f"http://{settings.api_host}:{settings.api_port}/v1/results/{other}", timeout=10)
    assert answer.status_code == 202 and answer.json()["status"] == "running"
    assert client.wait(other, 30).status is ResultStatus.CANCELLED


def test_a_deadline_mid_way_ends_expired_with_the_text_so_far(client):
    from datetime import datetime, timedelta, timezone

    rid = client.submit(
        "generate",
        MODEL,
        "a deadline is coming",
        generation={"max_new_tokens": 500},
        deadline=datetime.now(timezone.utc) + timedelta(seconds=2),
    )
    res = client.wait(rid, 30)
    assert res.status is ResultStatus.EXPIRED and res.error.code is ErrorCode.DEADLINE_EXPIRED
    assert res.outputs[0].finish_reason is FinishReason.DEADLINE and 0 < res.outputs[0].tokens < 500


def test_chunks_on_the_stream_topic_add_up_to_the_result(client, settings):
    rid = generate(client, ["first prompt", "second prompt"], max_new_tokens=40, stream_to_kafka=True)
    res = client.wait(rid, 60)
    consumer = KafkaConsumer(
        stream_topic(settings),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    chunks: list[StreamChunk] = []
    give_up = time.monotonic() + 30
    try:
        while sum(c.finish_reason is not None for c in chunks) < 2 and time.monotonic() < give_up:
            for records in consumer.poll(timeout_ms=200).values():
                chunks += [StreamChunk.model_validate_json(r.value) for r in records if r.key == rid.encode()]
    finally:
        consumer.close()
    for index, out in enumerate(res.outputs):
        mine = [c for c in chunks if c.index == index]
        assert "".join(c.text for c in mine) == out.text and mine[-1].finish_reason is FinishReason.LENGTH


def test_a_request_over_the_token_cap_is_dead_lettered(client, settings):
    too_many = settings.generate_max_new_tokens + 1
    body = {"schema_version": 1, "task": "generate", "model": MODEL, "inputs": "hi"}
    request = InferenceRequest.model_validate(body)
    raw = json.loads(request.wire_json())
    raw["generation"] = {"max_new_tokens": too_many}
    client.publish_raw(request.request_id, json.dumps(raw).encode())
    fine = generate(client, "still served", max_new_tokens=4)
    letters = dead_letters(settings, {request.request_id})
    assert letters[request.request_id].error.code is ErrorCode.VALIDATION_ERROR
    assert f"the limit is {settings.generate_max_new_tokens}" in letters[request.request_id].error.message
    assert client.wait(request.request_id, 30).status is ResultStatus.FAILED
    assert client.wait(fine, 30).status is ResultStatus.DONE
