"""Poison records on a real broker, Redis and intake (no worker: what is admitted stays ``queued``).

Issue 15, points 1, 2, 11 and 16: no record stops the intake. Records that cannot be decoded are
typed dead letters; a dead letter always fits the producer's limit; a record that breaks the
intake some other way is dead-lettered ``internal_error`` after a few tries; a request the API
admitted and the intake refuses ends ``failed`` instead of staying ``queued``. Each test proves the
intake is still reading by having valid requests behind the poison admitted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from kafka import KafkaProducer

from producers.client import InferqClient
from schemas import results as deadletter
from schemas.connections import kafka_options
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import requests_topic, result_key, unseen_key
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, intake_only

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def intake(tmp_path_factory) -> Iterator[Settings]:
    base = Settings(kafka_partitions=3, kafka_session_timeout_ms=6_000, log_ship=False)
    with intake_only(base, tmp_path_factory.mktemp("intake-poison")) as settings:
        yield settings


@pytest.fixture
def producer(intake: Settings) -> Iterator[KafkaProducer]:
    p = KafkaProducer(**kafka_options(intake), acks="all", max_request_size=2 << 20)
    yield p
    p.close()


def valid(n: int, tag: str) -> list[InferenceRequest]:
    return [InferenceRequest(task="embed", model=MODEL, inputs=f"{tag} {i}") for i in range(n)]


def all_admitted(client: InferqClient, reqs: list[InferenceRequest]) -> bool:
    found = client.store.get_many([r.request_id for r in reqs])
    return all(v is not None for v in found.values())


def with_field(rid: str, raw_value: str) -> bytes:
    body = {"schema_version": 1, "request_id": rid, "task": "embed", "model": MODEL, "inputs": "x"}
    return (json.dumps(body)[:-1] + f', "x": {raw_value}}}').encode()


def test_undecodable_records_are_typed_dead_letters_and_intake_reads_on(intake, producer):
    rid = "poison-with-an-id-0001"
    poison = {
        "brackets": b"[" * 50_000,
        "huge-int": with_field("p-int-" + "0" * 16, "9" * 5_000),
        "nan": with_field("p-nan-" + "0" * 16, "NaN"),
        "surrogate": with_field(rid, '"\\ud800"'),
        "big-float": with_field("p-flt-" + "0" * 16, "1e400"),
    }
    good = valid(6, "behind the poison")
    topic = requests_topic(intake)
    for name, raw in poison.items():
        producer.send(topic, key=name.encode(), value=raw, partition=0)
    for i, r in enumerate(good):
        producer.send(topic, key=r.request_id.encode(), value=r.wire_json().encode(), partition=i % 3)
    producer.flush()

    with InferqClient(intake) as client:
        eventually(lambda: all_admitted(client, good), timeout_s=60, what="the valid requests admitted")
        letters = dead_letters(intake, set(poison), by_record_key=True)
        assert {k: letters[k].error.code for k in poison} == dict.fromkeys(poison, ErrorCode.INVALID_JSON)
        # the id of a record poisoned elsewhere is not trusted (not JSON); none is answered
        assert client.result(rid) is None


def test_a_400_kb_invalid_utf8_record_gets_a_letter_that_fits_and_12_requests_pass(intake, producer):
    raw = b"\xff" * 409_600  # every byte a 3-byte U+FFFD once decoded: a 1.2 MB letter before
    good = valid(12, "on other partitions")
    topic = requests_topic(intake)
    producer.send(topic, key=b"invalid-utf8-400kb", value=raw, partition=0).get(timeout=30)
    for i, r in enumerate(good):
        producer.send(topic, key=r.request_id.encode(), value=r.wire_json().encode(), partition=1 + i % 2)
    producer.flush()

    with InferqClient(intake) as client:
        eventually(lambda: all_admitted(client, good), timeout_s=60, what="12 valid requests admitted")
    letter = dead_letters(intake, {"invalid-utf8-400kb"}, by_record_key=True)["invalid-utf8-400kb"]
    assert letter.error.code is ErrorCode.INVALID_ENCODING
    assert letter.payload_truncated and letter.payload_bytes == len(raw)
    assert len(letter.model_dump_json().encode()) <= deadletter.letter_cap(intake) + 200  # re-encoded here


def test_a_record_that_breaks_the_store_is_dead_lettered_internal_error(intake, producer):
    """A record whose result key is not a hash makes Redis answer WRONGTYPE: a non-transient error
    the intake did not expect. Before: the intake process died on it, at every restart."""
    victim = InferenceRequest(task="embed", model=MODEL, inputs="its key was clobbered")
    good = valid(3, "beside a record that breaks the store")
    with InferqClient(intake) as client:
        client.store.client.set(result_key(intake, victim.request_id), "not a hash")
        topic = requests_topic(intake)
        producer.send(topic, key=victim.request_id.encode(), value=victim.wire_json().encode(), partition=2)
        for r in good:
            producer.send(topic, key=r.request_id.encode(), value=r.wire_json().encode(), partition=2)
        producer.flush()
        letter = dead_letters(intake, {victim.request_id}, timeout_s=60)[victim.request_id]
        assert letter.error.code is ErrorCode.INTERNAL_ERROR
        assert letter.error.detail == {"exception": "ResponseError"} and letter.attempts >= 3
        eventually(lambda: all_admitted(client, good), timeout_s=30, what="its neighbours admitted")
        after = valid(1, "published after the poison")
        producer.send(topic, key=after[0].request_id.encode(), value=after[0].wire_json().encode())
        producer.flush()
        eventually(lambda: all_admitted(client, after), timeout_s=30, what="the intake still reading")


def test_a_failed_answer_replaces_the_queued_record_the_api_admitted(intake, producer):
    """Point 11: the API admits (``queued``) and then publishes exactly the wire JSON; when the intake
    refuses the record, its ``failed`` answer replaces that record and releases its in-flight count."""
    refused = InferenceRequest(task="embed", model=MODEL, inputs="y" * (Settings().max_text_chars + 1))
    other = InferenceRequest(task="embed", model=MODEL, inputs="z" * (Settings().max_text_chars + 1))
    with InferqClient(intake) as client:
        before = client.store.in_flight()
        client.admit(refused)
        client.admit(other)
        assert client.store.in_flight() == before + 2
        topic = requests_topic(intake)
        producer.send(topic, key=refused.request_id.encode(), value=refused.wire_json().encode())
        # same id, different content: not the record the API admitted, so it is left alone
        clash = other.model_copy(update={"inputs": other.inputs + "!"})
        producer.send(topic, key=other.request_id.encode(), value=clash.wire_json().encode())
        producer.flush()
        result = client.wait(refused.request_id, timeout_s=30)
        assert result.status is ResultStatus.FAILED and result.error.code is ErrorCode.VALIDATION_ERROR
        assert result.model == MODEL  # the queued record's fields are kept
        dead_letters(intake, {other.request_id})
        assert client.result(other.request_id).status is ResultStatus.QUEUED
        assert client.store.in_flight() == before + 1


@pytest.fixture(scope="module")
def lossy(tmp_path_factory) -> Iterator[Settings]:
    base = Settings(
        kafka_partitions=2, kafka_session_timeout_ms=6_000, log_ship=False, republish_unseen_after_s=2
    )
    with intake_only(base, tmp_path_factory.mktemp("intake-lost")) as settings:
        yield settings


def test_a_request_the_api_admitted_whose_record_the_broker_lost_is_published_again(lossy):
    """Point 16: the API records ``queued`` and then publishes; a record the broker loses after
    acknowledging it (an unclean restart) left the request queued for ever. Here the loss is the
    record never reaching the log at all, the same thing as seen from the intake."""
    lost = InferenceRequest(task="embed", model=MODEL, inputs="its record was lost")
    fine = InferenceRequest(task="embed", model=MODEL, inputs="its record arrived")
    traffic = valid(6, "moves the committed offsets on")
    with InferqClient(lossy) as client:
        client.admit(lost)  # admitted, never published
        client.admit(fine)
        client.publish(fine)  # what the API does: admit, then publish (with the admitted header)
        for r in traffic:
            client.publish(r)
        client.flush()
        unseen = client.store.client
        eventually(
            lambda: unseen.zscore(unseen_key(lossy), result_key(lossy, fine.request_id)) is None,
            timeout_s=30,
            what="the intake to mark the published request read",
        )
        lost_key = result_key(lossy, lost.request_id)
        eventually(
            lambda: unseen.hexists(lost_key, "handoff"), timeout_s=60, what="the lost request handed on"
        )
        assert client.result(lost.request_id).status is ResultStatus.QUEUED  # admitted once, not twice
        eventually(
            lambda: unseen.zscore(unseen_key(lossy), lost_key) is None, timeout_s=30, what="its copy dropped"
        )


@pytest.fixture(scope="module")
def paused(tmp_path_factory) -> Iterator[Settings]:
    base = Settings(
        kafka_partitions=1, kafka_session_timeout_ms=6_000, backpressure_max_inflight=2, log_ship=False
    )
    with intake_only(base, tmp_path_factory.mktemp("intake-paused")) as settings:
        yield settings


def test_while_paused_a_record_that_breaks_the_store_is_dead_lettered_and_skimming_goes_on(paused):
    """The paused skim path hands expired records on; one that breaks the store there is struck,
    then dead-lettered like anywhere else, and the expired records beside it are still answered."""
    past = datetime(2001, 1, 1, tzinfo=timezone.utc)
    victim = InferenceRequest(task="embed", model=MODEL, inputs="expired, key clobbered", deadline=past)
    with InferqClient(paused) as client:
        for i in range(2):
            client.submit("embed", MODEL, f"fills the bound {i}")
        client.flush()
        eventually(lambda: client.store.in_flight() == 2, what="the bound reached")
        client.store.client.set(result_key(paused, victim.request_id), "not a hash")
        client.publish(victim)
        late = [client.submit("embed", MODEL, f"expired in the backlog {i}", deadline=past) for i in range(3)]
        client.flush()
        letter = dead_letters(paused, {victim.request_id}, timeout_s=60)[victim.request_id]
        assert letter.error.code is ErrorCode.INTERNAL_ERROR
        results = client.wait_all(late, timeout_s=30)
        assert {r.status for r in results.values()} == {ResultStatus.EXPIRED}
        assert client.store.in_flight() == 2  # still paused: the bound is still taken
