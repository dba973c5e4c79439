"""Kafka in → Redis out on the real local stack."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np

from schemas.errors import ErrorCode
from schemas.messages import (
    ClassifyOutput,
    EmbeddingOutput,
    InferenceRequest,
    ResultStatus,
    new_request_id,
)
from schemas.naming import result_key
from tests.stack import dead_letters

TEXTS = [
    "how do I reset my online banking password",
    "I want to talk to a real person right now",
    "what's the weather going to be like in Lisbon tomorrow",
    "transfer 200 dollars from checking to savings",
    "set a timer for 25 minutes",
    "my card was declined at the grocery store, why",
]


def test_requests_published_to_kafka_all_come_back_done(client):
    reqs = []
    for i in range(120):
        text = TEXTS[i % len(TEXTS)] + f" (#{i})"
        if i % 3 == 0:
            reqs.append(
                InferenceRequest(task="classify", model="minilm-intent", inputs=text, top_k=4, tenant="t1")
            )
        else:
            reqs.append(InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=text))
    for r in reqs:
        client.publish(r)
    results = client.wait_all([r.request_id for r in reqs], timeout_s=180)

    assert {r.status for r in results.values()} == {ResultStatus.DONE}
    batch_sizes = []
    for r in reqs:
        res = results[r.request_id]
        assert res.request_id == r.request_id and res.task == r.task and res.model == r.model
        assert res.model_version and res.model_version.startswith(r.model + "@")
        t = res.timings
        assert t.published_ms <= t.received_ms + 1000  # producer and intake clocks are the same machine
        assert t.received_ms <= t.queued_ms <= t.batch_start_ms <= t.done_ms
        batch_sizes.append(t.batch_size)
        (out,) = res.outputs
        if r.task.value == "embed":
            assert isinstance(out, EmbeddingOutput) and len(out.embedding) == 384
            assert abs(np.linalg.norm(out.embedding) - 1.0) < 1e-4
        else:
            assert res.tenant == "t1"
            assert isinstance(out, ClassifyOutput) and len(out.labels) == 4
            scores = [x.score for x in out.labels]
            assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert max(batch_sizes) > 1, "requests were never batched together"


def test_list_inputs_come_back_in_order(client):
    texts = ["set a timer for 25 minutes", "I want to talk to a real person right now", "hello there"]
    many = client.submit("embed", "all-MiniLM-L6-v2", texts)
    singles = [client.submit("embed", "all-MiniLM-L6-v2", t) for t in texts]
    results = client.wait_all([many, *singles], timeout_s=60)
    got = [o.embedding for o in results[many].outputs]
    assert len(got) == 3
    for vec, single in zip(got, singles, strict=True):
        np.testing.assert_allclose(vec, results[single].outputs[0].embedding, atol=1e-4)
    cls = client.wait(client.submit("classify", "minilm-intent", texts[:2], top_k=1), timeout_s=60)
    assert [o.labels[0].label for o in cls.outputs] == ["timer", "connect_to_human"]


def test_invalid_messages_are_dead_lettered_and_answered_while_valid_ones_flow(client, settings):
    bad_model_id = new_request_id()
    bad_schema_id = new_request_id()
    good_before = [client.submit("embed", "all-MiniLM-L6-v2", f"before {i}") for i in range(10)]
    client.publish_raw("junk", b"{this is not json")
    client.publish_raw(
        bad_model_id,
        json.dumps(
            {
                "schema_version": 1,
                "request_id": bad_model_id,
                "task": "embed",
                "model": "gpt-17",
                "inputs": "x",
            }
        ).encode(),
    )
    client.publish_raw(
        bad_schema_id,
        json.dumps(
            {
                "schema_version": 7,
                "request_id": bad_schema_id,
                "task": "embed",
                "model": "all-MiniLM-L6-v2",
                "inputs": "x",
            }
        ).encode(),
    )
    good_after = [client.submit("embed", "all-MiniLM-L6-v2", f"after {i}") for i in range(10)]

    results = client.wait_all(good_before + good_after + [bad_model_id, bad_schema_id], timeout_s=60)
    assert all(results[i].status is ResultStatus.DONE for i in good_before + good_after)
    assert results[bad_model_id].status is ResultStatus.FAILED
    assert results[bad_model_id].error.code is ErrorCode.UNKNOWN_MODEL
    assert "gpt-17" in results[bad_model_id].error.message and results[bad_model_id].error.hint
    assert results[bad_schema_id].error.code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION

    letters = dead_letters(settings, {bad_model_id, bad_schema_id, "{this is not json"})
    assert letters[bad_model_id].error.code is ErrorCode.UNKNOWN_MODEL
    assert letters[bad_schema_id].error.code is ErrorCode.UNSUPPORTED_SCHEMA_VERSION
    junk = letters["{this is not json"]
    assert junk.error.code is ErrorCode.INVALID_JSON and junk.key == "junk" and junk.request_id is None


def test_a_duplicated_request_id_yields_one_visible_result(client, settings):
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="duplicate me")
    for _ in range(3):
        client.publish(req)  # e.g. a producer retry
    first = client.wait(req.request_id, timeout_s=60)
    assert first.status is ResultStatus.DONE
    # publish again after it finished, plus a conflicting payload under the same id
    client.publish(req)
    conflict = req.model_copy(update={"inputs": "something else"})
    client.publish(conflict)
    marker = client.submit("embed", "all-MiniLM-L6-v2", "marker after the duplicates")
    client.wait(marker, timeout_s=60)
    letters = dead_letters(settings, {req.request_id})
    assert letters[req.request_id].error.code is ErrorCode.DUPLICATE_REQUEST_ID
    assert client.result(req.request_id) == first  # untouched: written once
    keys = client.store.client.keys(result_key(settings, req.request_id) + "*")
    assert len(keys) == 1


def test_unknown_id_is_none(client):
    assert client.result(new_request_id()) is None


def test_high_priority_overtakes_a_backlog_and_deadlines_expire_in_it(client):
    backlog = [
        InferenceRequest(
            task="embed", model="all-MiniLM-L6-v2", inputs=f"{TEXTS[i % len(TEXTS)]} #{i}", priority="low"
        )
        for i in range(240)
    ]
    for r in backlog:
        client.publish(r)
    late = InferenceRequest(
        task="embed",
        model="all-MiniLM-L6-v2",
        # far longer than any other text waiting: length bucketing picks it last, so it really waits
        # behind the backlog (a short one joined the urgent texts' batch, which a warm model started
        # within the deadline)
        inputs=" ".join(["behind the backlog"] * 40),
        priority="low",
        deadline=datetime.now(timezone.utc) + timedelta(milliseconds=300),  # < one 32-text batch
    )
    client.publish(late)
    client.flush()
    urgent = [client.submit("embed", "all-MiniLM-L6-v2", f"urgent {i}", priority="high") for i in range(5)]
    results = client.wait_all([r.request_id for r in backlog] + urgent + [late.request_id], timeout_s=180)
    low_done = sorted(results[r.request_id].timings.done_ms for r in backlog)
    high_done = [results[rid].timings.done_ms for rid in urgent]
    assert all(results[rid].status is ResultStatus.DONE for rid in urgent)
    assert max(high_done) < low_done[len(low_done) // 2], "high priority waited behind half the backlog"
    expired = results[late.request_id]
    assert expired.status is ResultStatus.EXPIRED and expired.error.code.value == "deadline_expired"
