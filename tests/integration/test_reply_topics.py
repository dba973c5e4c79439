"""Reply topics on the real stack: a terminal result published to the request's ``reply_topic`` and
to the deployment's ``INFERQ_RESULTS_TOPIC`` (the session stack sets both, tests/stack.py), each
record's key the request id and its value the stored result byte for byte; a topic outside the
tenant's allow-list refused with the typed error; the Kafka sink's failures when no broker answers."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from ops.stack import free_port
from schemas.connections import kafka_options
from schemas.messages import InferenceRequest, ResultStatus, new_request_id, now_ms
from schemas.naming import requests_topic, result_key, scoped_id
from schemas.replies import targets_json
from schemas.results import queued_result, result
from schemas.settings import Settings
from tests.stack import RESULTS_TOPIC
from tests.stack import eventually as stack_eventually
from workers.delivery.dispatcher import Dispatcher
from workers.delivery.kafka_sink import KafkaSink
from workers.delivery.sink import Delivery
from workers.store.outbox import Outbox
from workers.store.store import ResultStore, request_digest

MODEL = "all-MiniLM-L6-v2"


def make_topic(settings: Settings, topic: str) -> None:
    """Reply topics are the user's: created by them (here, by the test), one partition."""
    admin = KafkaAdminClient(**kafka_options(settings), request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def records(
    settings: Settings, topic: str, keys: set[str], timeout_s: float = 30.0
) -> dict[str, list[bytes]]:
    """Every record of ``topic`` whose key is in ``keys`` (values by key), read from the start until
    each key has one and the end offsets (taken then) are reached: later duplicates would show."""
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False, consumer_timeout_ms=500)
    found: dict[str, list[bytes]] = {}
    try:
        give_up = time.monotonic() + timeout_s
        while True:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            if parts or time.monotonic() > give_up:
                break
            time.sleep(0.2)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        while time.monotonic() < give_up:
            for batch in consumer.poll(timeout_ms=200).values():
                for rec in batch:
                    key = rec.key.decode() if rec.key else ""
                    if key in keys:
                        found.setdefault(key, []).append(rec.value)
            if keys <= found.keys():
                ends = consumer.end_offsets(parts)
                if all(consumer.position(tp) >= ends[tp] for tp in parts):
                    return found
        return found
    finally:
        consumer.close()


def stored(client, request_id: str, tenant: str | None = None) -> bytes:
    return client.store.client.hget(result_key(client.settings, scoped_id(tenant, request_id)), "body")


@pytest.fixture(scope="module")
def reply_topic(stack, settings) -> Iterator[str]:
    topic = f"replies.{new_request_id()[:8]}"
    make_topic(settings, topic)
    yield topic


def test_a_reply_topic_gets_the_stored_result_once_keyed_by_request_id_and_so_does_the_results_topic(
    client, settings, reply_topic
):
    trace = secrets.token_hex(16)  # the producer's trace: the record on the reply topic carries it
    traceparent = f"00-{trace}-{secrets.token_hex(8)}-01"
    ids = [client.submit("embed", MODEL, "reply traced", reply_topic=reply_topic, traceparent=traceparent)]
    ids += [client.submit("embed", MODEL, f"reply {i}", reply_topic=reply_topic) for i in range(2)]
    plain = client.submit("embed", MODEL, "no reply topic")
    results = client.wait_all([*ids, plain], timeout_s=60)
    assert all(r.status is ResultStatus.DONE for r in results.values())
    bodies = {rid: stored(client, rid) for rid in [*ids, plain]}

    on_reply = records(settings, reply_topic, set(ids))
    assert {k: v for k, v in on_reply.items()} == {rid: [bodies[rid]] for rid in ids}
    assert json.loads(on_reply[ids[0]][0])["trace_id"] == trace
    # INFERQ_RESULTS_TOPIC: every result, with or without a reply topic
    on_all = records(settings, RESULTS_TOPIC, {*ids, plain})
    assert on_all == {rid: [bodies[rid]] for rid in [*ids, plain]}


def test_a_cancelled_request_is_delivered_too(client, settings, reply_topic):
    """Every writer of a terminal status feeds the outbox: here CANCEL (a request cancelled while
    it waits behind a deadline sweep is the same path as EXPIRE_DUE)."""
    req = InferenceRequest(
        task="embed", model=MODEL, inputs="to cancel", reply_topic=reply_topic, tenant="t1"
    )
    assert client.admit(req).value == "new"  # recorded queued, never published: it stays queued
    assert client.cancel(req.request_id, tenant="t1") is ResultStatus.CANCELLED
    body = stored(client, req.request_id, "t1")
    assert records(settings, reply_topic, {req.request_id}) == {req.request_id: [body]}


def test_a_topic_outside_the_tenants_list_is_refused_with_the_typed_error(stack, settings, client):
    base = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "x", "tenant": "acme"}
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as api:
        ok = api.post("/v1/requests", json={**base, "reply_topic": "acme.replies"})
        assert ok.status_code == 202, ok.text
        for topic in ("other.replies", requests_topic(settings)):
            refused = api.post("/v1/requests", json={**base, "reply_topic": topic})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "reply_topic_refused"
    # over Kafka: answered failed with the same code (and dead-lettered, as any invalid request)
    rid = new_request_id()
    raw = InferenceRequest(request_id=rid, task="embed", model=MODEL, inputs="x", tenant="acme")
    wire = raw.wire_json().replace('"tenant":"acme"', '"tenant":"acme","reply_topic":"other.replies"')
    client.publish_raw(rid, wire.encode(), tenant="acme").get(10)
    result = client.wait(rid, timeout_s=30, tenant="acme")
    assert result.status is ResultStatus.FAILED and result.error.code.value == "reply_topic_refused"
    # INFERQ_RESULTS_TOPIC gets every result, this one too (never the refused topic)
    assert records(settings, RESULTS_TOPIC, {rid}) == {rid: [stored(client, rid, "acme")]}


def test_the_kafka_sink_says_retryable_when_no_broker_answers_and_refuses_reserved_topics(settings):
    away = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "delivery_send_timeout_s": 1.0}
    )
    sink = KafkaSink(away)
    try:
        d = Delivery(request_id="r1", tenant=None, target="replies.x", body=b"{}")
        own = Delivery(request_id="r1", tenant=None, target=requests_topic(away), body=b"{}")
        mine = Delivery(request_id="r1", tenant="other", target="acme.x", body=b"{}")
        failed, reserved, not_allowed = sink.send_many([d, own, mine])
        assert failed is not None and failed.retryable
        assert reserved is not None and (reserved.reason, reserved.retryable) == ("reserved_topic", False)
        assert not_allowed is not None and not_allowed.reason == "topic_not_allowed"
    finally:
        sink.close()


class Forwarder:
    """A TCP port that refuses connections until :meth:`open`, then forwards them to ``target``: the
    broker as a client that bootstraps from it sees it (away, then back)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_a_broker_away_makes_deliveries_retry_then_succeed_once(stack, settings, reply_topic):
    """The real outbox, store and broker, with a delivery dispatcher of the test's own (on its own
    key prefix, so the stack's delivery service does not take the entry) whose producer bootstraps
    through a port that is closed at first."""
    host, port = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    gate = Forwarder((host, int(port)))
    s = settings.model_copy(
        update={
            "key_prefix": f"away{secrets.token_hex(3)}",
            "results_topic": "",  # the reply topic alone: one target
            "kafka_bootstrap_servers": f"127.0.0.1:{gate.port}",
            "delivery_send_timeout_s": 1.0,
            "delivery_retry_initial_s": 0.1,
        }
    )
    store = ResultStore.from_settings(s)
    req = InferenceRequest(task="embed", model=MODEL, inputs="away", reply_topic=reply_topic)
    store.admit(
        [(request_digest(req), queued_result(req, {}))], deliveries={req.request_id: targets_json(req, s)}
    )
    store.advance([result(req, ResultStatus.DONE, {"done_ms": now_ms()})])
    outbox = Outbox(store.client, s, "test")
    outbox.ensure_group()
    outcomes: list[str] = []

    class Report:
        def outcome(self, delivery: Delivery, sink: str, outcome: str, reason: str = "") -> None:
            outcomes.append(outcome)

        def flush(self) -> None:
            pass

    dispatcher = Dispatcher(outbox, {"kafka": KafkaSink(s)}, s, Report())
    try:

        def after_a_step(outcome: str) -> bool:
            dispatcher.step(block_ms=100)
            return outcome in outcomes

        stack_eventually(lambda: after_a_step("retried"), 30, "a failed try")
        gate.open()
        stack_eventually(lambda: after_a_step("sent"), 30, "the delivery")

    finally:
        dispatcher.close()
        gate.close()
    assert outcomes[-1] == "sent" and set(outcomes[:-1]) == {"retried"}
    assert outbox.backlog() == (0, 0)  # acknowledged and deleted
    body = store.client.hget(result_key(s, req.request_id), "body")
    assert records(settings, reply_topic, {req.request_id}) == {req.request_id: [body]}
