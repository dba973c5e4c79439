"""Webhooks end to end on the session stack: a request names a ``callback_url`` (over Kafka or the
HTTP API), the worker writes its result to Redis, the result goes through the outbox to the stack's
delivery service, whose webhook sink POSTs it to a real HTTPS receiver on a loopback port
(tests/webhooks.py; its certificate signed by the CA the stack trusts, tests/stack.py). The receiver
checks what a user's would: the body is the stored result byte for byte, the signature verifies
with the tenant's key, ``traceparent`` continues the request's trace; one that fails the first tries
gets the result on a retry; one that refuses it for good is recorded undeliverable (an ECS record in
the log store and ``inferq_deliveries_total{outcome="failed"}``)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme
from elasticsearch import Elasticsearch

from producers.client import InferqClient
from producers.webhooks import verify
from schemas.callbacks import webhook_key
from schemas.messages import InferenceRequest, ResultStatus, new_request_id
from schemas.naming import outbox_key, result_key, scoped_id
from schemas.settings import Settings
from tests.integration.test_observability import scrape, search, total
from tests.integration.test_reply_topics import make_topic, records
from tests.stack import eventually
from tests.webhooks import Answer, Received, Receiver, receiver

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def rx(stack, webhook_ca: trustme.CA, tmp_path_factory) -> Iterator[Receiver]:
    """A receiver whose certificate the stack's delivery service trusts."""
    with receiver(tmp_path_factory.mktemp("webhook-rx"), ca=webhook_ca) as r:
        yield r


@pytest.fixture(scope="module")
def es(stack, settings: Settings) -> Elasticsearch:
    return Elasticsearch(settings.elasticsearch_url)


def new_trace() -> tuple[str, str]:
    """A caller's trace id and its ``traceparent``."""
    trace = secrets.token_hex(16)
    return trace, f"00-{trace}-{secrets.token_hex(8)}-01"


def posts_of(rx: Receiver, request_id: str) -> list[Received]:
    return [r for r in rx.received if r.headers.get("X-Inferq-Request-Id") == request_id]


def arrived(rx: Receiver, request_id: str, n: int = 1, timeout_s: float = 30.0) -> list[Received]:
    """The POSTs of ``request_id`` once ``n`` have come (failing after ``timeout_s``)."""
    got = eventually(
        lambda: p if len(p := posts_of(rx, request_id)) >= n else None, timeout_s, f"{n} POST(s)"
    )
    assert isinstance(got, list)
    return got


def settled(client: InferqClient) -> None:
    """Wait until the delivery service has finished every outbox entry (delivered or given up): a
    second POST of a result would have been sent by then."""
    key = outbox_key(client.settings)
    eventually(lambda: client.store.client.xlen(key) == 0, 30, "an empty outbox")


def stored(client: InferqClient, request_id: str, tenant: str | None = None) -> bytes:
    body = client.store.client.hget(result_key(client.settings, scoped_id(tenant, request_id)), "body")
    assert isinstance(body, bytes)
    return body


def check_post(post: Received, body: bytes, key: bytes | None, trace: str) -> None:
    assert post.body == body
    assert key is not None and verify(key, post.headers, post.body) > 0
    assert post.headers["traceparent"].split("-")[1] == trace


def test_a_result_is_posted_once_signed_and_traced_from_kafka_and_from_http(
    rx: Receiver, client: InferqClient, settings: Settings
) -> None:
    rx.answer()
    trace_k, parent_k = new_trace()
    over_kafka = InferenceRequest(
        task="embed", model=MODEL, inputs="hook over kafka", tenant="acme", callback_url=rx.url("/kafka")
    )
    client.publish(over_kafka, traceparent=parent_k)
    client.flush()
    trace_h, parent_h = new_trace()
    body: dict[str, Any] = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "hook over http"}
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as api:
        r = api.post(
            "/v1/requests", json={**body, "callback_url": rx.url("/http")}, headers={"traceparent": parent_h}
        )
    assert r.status_code == 202, r.text
    over_http = r.json()["request_id"]

    kafka_result = client.wait(over_kafka.request_id, timeout_s=60, tenant="acme")
    http_result = client.wait(over_http, timeout_s=60)
    assert kafka_result.status is ResultStatus.DONE and http_result.status is ResultStatus.DONE
    assert (kafka_result.trace_id, http_result.trace_id) == (trace_k, trace_h)
    arrived(rx, over_kafka.request_id)
    arrived(rx, over_http)
    settled(client)
    (from_kafka,) = posts_of(rx, over_kafka.request_id)  # exactly one each
    (from_http,) = posts_of(rx, over_http)
    assert (from_kafka.path, from_http.path) == ("/kafka", "/http")
    check_post(
        from_kafka, stored(client, over_kafka.request_id, "acme"), webhook_key(settings, "acme"), trace_k
    )
    check_post(from_http, stored(client, over_http), webhook_key(settings, None), trace_h)
    with pytest.raises(ValueError):  # signed with the tenant's own key, not another's
        verify(webhook_key(settings, None) or b"", from_kafka.headers, from_kafka.body)


def test_a_receiver_answering_503_twice_gets_the_result_on_the_third_try(
    rx: Receiver, client: InferqClient, settings: Settings
) -> None:
    rx.answer(Answer(503), Answer(503))
    trace, parent = new_trace()
    req = InferenceRequest(task="embed", model=MODEL, inputs="hook retried", callback_url=rx.url("/retry"))
    client.publish(req, traceparent=parent)
    client.flush()
    assert client.wait(req.request_id, timeout_s=60).status is ResultStatus.DONE
    arrived(rx, req.request_id, n=3)
    settled(client)
    posts = posts_of(rx, req.request_id)
    assert [p.headers["X-Inferq-Attempt"] for p in posts] == ["1", "2", "3"]
    body = stored(client, req.request_id)
    for post in posts:  # the same bytes every try, each signed afresh
        check_post(post, body, webhook_key(settings, None), trace)


def test_a_receiver_answering_400_is_given_up_at_once_logged_and_counted(
    rx: Receiver, client: InferqClient, settings: Settings, es: Elasticsearch
) -> None:
    before = total(scrape(settings), "inferq_deliveries_total", sink="webhook", outcome="failed")
    rx.answer(Answer(400), Answer(400), Answer(400))  # any retry would get 400 too
    req = InferenceRequest(task="embed", model=MODEL, inputs="hook refused", callback_url=rx.url("/refuse"))
    client.publish(req)
    client.flush()
    assert client.wait(req.request_id, timeout_s=60).status is ResultStatus.DONE
    arrived(rx, req.request_id)
    settled(client)
    assert len(posts_of(rx, req.request_id)) == 1  # not retried
    rx.answer()

    def failed_record() -> list[dict[str, Any]]:
        query = {
            "bool": {
                "filter": [
                    {"term": {"event.dataset": "inferq.delivery"}},
                    {"term": {"inferq.request_id": req.request_id}},
                ]
            }
        }
        return search(es, settings, query)

    docs = eventually(failed_record, 30, "the delivery's ECS record")
    assert isinstance(docs, list) and len(docs) == 1, docs
    doc = docs[0]
    delivery = doc["inferq"]["delivery"]
    assert (delivery["sink"], delivery["outcome"], delivery["reason"]) == ("webhook", "failed", "http_400")
    assert doc["event"]["outcome"] == "failure"

    def counted() -> bool:
        now = total(scrape(settings), "inferq_deliveries_total", sink="webhook", outcome="failed")
        return now == before + 1

    eventually(counted, 30, "inferq_deliveries_total{sink=webhook,outcome=failed} to rise by one")


def test_a_request_with_a_reply_topic_and_a_callback_url_gets_each_once(
    rx: Receiver, client: InferqClient, settings: Settings
) -> None:
    rx.answer()
    topic = f"replies.{new_request_id()[:8]}"
    make_topic(settings, topic)
    req = InferenceRequest(
        task="embed", model=MODEL, inputs="hook and topic", reply_topic=topic, callback_url=rx.url("/both")
    )
    client.publish(req)
    client.flush()
    assert client.wait(req.request_id, timeout_s=60).status is ResultStatus.DONE
    arrived(rx, req.request_id)
    settled(client)
    body = stored(client, req.request_id)
    assert [p.body for p in posts_of(rx, req.request_id)] == [body]
    assert records(settings, topic, {req.request_id}) == {req.request_id: [body]}
