"""Attacks on the merged hardening (issue 15), on a real broker, Redis and intake under
``INFERQ_KAFKA_TENANT_AUTH=signed``, with the HTTP API in-process and no worker (MiniLM is advertised
by an idle one: what is admitted for it stays ``queued`` unless something ends it)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import redis
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer
from pydantic import SecretStr

from producers.api import create_app
from producers.auth import digest, new_key
from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.errors import ErrorCode
from schemas.messages import DeadLetter, InferenceRequest, ResultStatus, new_request_id
from schemas.naming import deadletter_topic, requests_topic, result_key, scoped_id
from schemas.settings import Settings
from schemas.tenancy import signed_headers
from tests.stack import dead_letters, eventually, intake_only
from workers.store.presence import advertise
from workers.store.store import ResultStore

ALICE = secrets.token_hex(32)
KEY_ALICE, KEY_CAROL = new_key(), new_key()  # carol has an API key but no Kafka key


@pytest.fixture(scope="module")
def signed(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    base = settings.model_copy(
        update={
            "kafka_tenant_auth": "signed",
            "kafka_tenant_keys": SecretStr(f"alice:{ALICE}"),
            "api_keys": SecretStr(f"alice:{digest(KEY_ALICE)},carol:{digest(KEY_CAROL)}"),
            "unserved_model_grace_s": 1.0,
            "log_ship": False,
        }
    )
    with intake_only(base, tmp_path_factory.mktemp("attack")) as s:
        # MiniLM is served by a worker that never takes a message: what is admitted stays queued
        advertise(redis.Redis.from_url(s.redis_url), s, "idle-worker", ["all-MiniLM-L6-v2"], ttl_s=3_600)
        yield s


def invalid(rid: str, tenant: str) -> bytes:
    """A record that fails validation (an empty input) naming ``tenant`` and ``rid``."""
    body = {"schema_version": 1, "request_id": rid, "tenant": tenant, "task": "embed"}
    return json.dumps({**body, "model": "all-MiniLM-L6-v2", "inputs": ""}).encode()


def test_an_unsigned_invalid_record_cannot_squat_a_tenants_id(signed: Settings) -> None:
    """Before: an unauthenticated writer's invalid record naming tenant alice was answered
    ``failed`` in alice's namespace, so alice's own later request with that id was a duplicate of
    the squatter's answer. Only a record alice signed may be answered under her name."""
    squat, own = new_request_id(), new_request_id()
    raw = KafkaProducer(**kafka_options(signed), acks="all")
    raw.send(requests_topic(signed), key=squat.encode(), value=invalid(squat, "alice")).get(timeout=10)
    raw.close()
    mine = signed.model_copy(update={"kafka_tenant_keys": SecretStr("")})
    with InferqClient(mine, tenant="alice", tenant_key=ALICE) as alice:
        alice.publish_raw(own, invalid(own, "alice")).get(timeout=10)
    letters = dead_letters(signed, {squat, own})
    assert letters[squat].error.code is ErrorCode.VALIDATION_ERROR
    store = ResultStore.from_settings(signed)
    eventually(lambda: store.get(own, "alice"), what="alice's own invalid record answered")
    answered = store.get(own, "alice")
    assert answered is not None and answered.status is ResultStatus.FAILED
    assert store.get(squat, "alice") is None  # the id is still alice's to use


def test_a_request_the_api_admitted_for_an_unserved_model_does_not_stay_queued(signed: Settings) -> None:
    """Before: the API recorded it ``queued``, the intake answered ``model_unavailable`` only where
    no record existed, and the request stayed queued (holding its tenant's in-flight) for the TTL."""
    with TestClient(create_app(signed)) as api:
        body = {"schema_version": 1, "task": "generate", "model": "causal-lm", "inputs": "hello"}
        ids = []
        for _ in range(3):  # the first may land inside the intake's start-up grace
            answer = api.post("/v1/requests", json=body, headers={"X-API-Key": KEY_ALICE})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["request_id"])
        store = ResultStore.from_settings(signed)

        def ended() -> bool:
            results = [store.get(rid, "alice") for rid in ids]
            return all(r is not None and r.status.terminal for r in results)

        eventually(ended, what="the unserved requests answered")
        results = [store.get(rid, "alice") for rid in ids]
        assert {r.error.code for r in results if r and r.error} == {ErrorCode.MODEL_UNAVAILABLE}
        assert store.tenant_usage("alice")[0] == 0  # nothing left holding alice's in-flight


def test_the_api_refuses_what_it_cannot_sign_instead_of_leaving_it_queued(signed: Settings) -> None:
    """Before: carol (an API key, no Kafka key) got 202, the intake refused the unsigned record,
    and the request stayed ``queued`` for the TTL. Now 403 at once, nothing recorded."""
    with TestClient(create_app(signed)) as api:
        rid = new_request_id()
        body = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="hi", request_id=rid)
        answer = api.post("/v1/requests", content=body.wire_json(), headers={"X-API-Key": KEY_CAROL})
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == ErrorCode.FORBIDDEN.value
        assert ResultStore.from_settings(signed).get(rid, "carol") is None


def test_the_api_refuses_requests_past_the_models_in_flight_bound(signed: Settings) -> None:
    """Before: while the intake was paused at the bound, POST went on storing requests (each twice:
    the queued record and the hand-off copy), without limit. Now 503 ``overloaded`` at the bound."""
    bound = ResultStore.from_settings(signed).in_flight_by_model(["all-MiniLM-L6-v2"])["all-MiniLM-L6-v2"] + 2
    with TestClient(create_app(signed.model_copy(update={"backpressure_max_inflight": bound}))) as api:
        codes = []
        for i in range(4):  # the fixture's idle worker never runs them: they stay in flight
            body = InferenceRequest(
                task="embed", model="all-MiniLM-L6-v2", inputs=f"fill {i}", tenant="alice"
            )
            answer = api.post("/v1/requests", content=body.wire_json(), headers={"X-API-Key": KEY_ALICE})
            codes.append((answer.status_code, answer.json().get("error", {}).get("code")))
    assert codes == [(202, None), (202, None), (503, "overloaded"), (503, "overloaded")], codes


class RawName(str):
    """A header name that encodes to bytes that are not UTF-8, as librdkafka (kcat) can write."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-not-utf8"


def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_reading_goes_on(signed: Settings) -> None:
    """Before: kafka-python raised CorruptRecordError out of poll(), and the next poll() looped for
    ever on the failed batch: the intake read nothing more, on any partition, while staying up."""
    mine = signed.model_copy(update={"kafka_tenant_keys": SecretStr("")})
    before, after, elsewhere = (
        InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=t, tenant="alice")
        for t in ("before", "after", "elsewhere")
    )
    tp = requests_topic(signed)
    with InferqClient(mine, tenant="alice", tenant_key=ALICE) as alice:
        value = before.wire_json().encode()
        alice.producer.send(tp, partition=0, value=value, headers=_signed(value)).get(timeout=10)
        poison = [  # three in a row: each one found, none read as the next's neighbour
            alice.producer.send(tp, partition=0, value=b"{}", headers=[(RawName("x"), b"v")])
            for _ in range(3)
        ]
        bad = {f.get(timeout=10).offset for f in poison}
        for req, partition in ((after, 0), (elsewhere, 1)):
            value = req.wire_json().encode()
            alice.producer.send(tp, partition=partition, value=value, headers=_signed(value)).get(timeout=10)
    store = ResultStore.from_settings(signed)
    for rid in (before.request_id, after.request_id, elsewhere.request_id):
        eventually(partial(store.get, rid, "alice"), what="the records around it admitted")
    letters = [d for d in _letters(signed, lambda d: d.source_partition == 0 and d.source_offset in bad)]
    assert {d.source_offset for d in letters} == bad
    assert {d.error.code for d in letters} == {ErrorCode.INVALID_ENCODING}


def _letters(settings: Settings, wanted: Callable[[DeadLetter], bool]) -> list[DeadLetter]:
    """Every dead letter on the topic that ``wanted`` accepts (read until the end)."""
    reader = KafkaConsumer(
        deadletter_topic(settings), **kafka_options(settings), auto_offset_reset="earliest"
    )
    try:
        found: list[DeadLetter] = []
        for _ in range(20):  # the topic's records arrive over a few polls
            for records in reader.poll(timeout_ms=500).values():
                found += [d for r in records if wanted(d := DeadLetter.model_validate_json(r.value))]
        return found
    finally:
        reader.close()


def _signed(value: bytes) -> list[tuple[str, bytes]]:
    return signed_headers("alice", bytes.fromhex(ALICE), value)


def test_a_huge_record_key_is_not_carried_into_the_store(signed: Settings) -> None:
    """Before: a valid 300-byte request with a 600 KB key kept the whole key in its hand-off (in
    Redis while queued, and in its Celery message), outside every size limit and tenant quota."""
    client = redis.Redis.from_url(signed.redis_url)
    store = ResultStore.from_settings(signed)
    mine = signed.model_copy(update={"kafka_tenant_keys": SecretStr("")})
    admitted: list[str] = []

    def admit_one() -> bool:  # until the intake's reading of the advertisement (cached 1 s) says served
        req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="small", tenant="alice")
        value = req.wire_json().encode()
        with InferqClient(mine, tenant="alice", tenant_key=ALICE) as alice:
            sent = alice.producer.send(
                requests_topic(signed), key=b"k" * 600_000, value=value, headers=_signed(value)
            )
            sent.get(timeout=10)
        eventually(partial(store.get, req.request_id, "alice"), what="the request answered")
        result = store.get(req.request_id, "alice")
        if result is not None and result.status is ResultStatus.QUEUED:
            admitted.append(req.request_id)
        return bool(admitted)

    eventually(admit_one, what="a request admitted (the model is advertised)")
    handoff = client.hget(result_key(signed, scoped_id("alice", admitted[0])), "handoff")
    assert handoff is not None and len(handoff) < 8_192
    store.cancel(admitted[0], "alice")
