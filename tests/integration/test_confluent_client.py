"""The intake and the client over confluent-kafka (``INFERQ_KAFKA_CLIENT=confluent``) on a real
broker, Redis and intake (no worker: what is admitted stays ``queued``).

The whole intake tier also runs over it with the variable set (``INFERQ_KAFKA_CLIENT=confluent
pytest tests/integration/...``: every stack and client of the session takes it); this module keeps
the points that differ from kafka-python covered without it: records handed off and committed,
dead letters sent through the librdkafka producer, a record librdkafka cannot decode skipped like
kafka-python's, and commits that survive the intake's restart (static membership).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import requests_topic
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, only

pytest.importorskip("confluent_kafka")  # inferq[fast]; the dev install has it

MODEL = "all-MiniLM-L6-v2"


class RawName(str):
    """A header name that encodes to bytes that are not UTF-8 (kafka-python writes what encode gives)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-not-utf8"


@pytest.fixture(scope="module")
def intake(tmp_path_factory) -> Iterator[Settings]:
    base = Settings(
        kafka_partitions=3, kafka_session_timeout_ms=6_000, log_ship=False, kafka_client="confluent"
    )
    with only(["broker", "redis", "intake"], base, tmp_path_factory.mktemp("confluent")) as settings:
        yield settings


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def valid(n: int, tag: str) -> list[InferenceRequest]:
    return [InferenceRequest(task="embed", model=MODEL, inputs=f"{tag} {i}") for i in range(n)]


def admitted(client: InferqClient, reqs: list[InferenceRequest]) -> bool:
    found = client.store.get_many([r.request_id for r in reqs])
    return all(v is not None for v in found.values())


def test_the_client_publishes_and_the_intake_admits_and_answers_through_librdkafka(intake):
    reqs = valid(300, "confluent")
    bad_id = "confluent-bad-0000001"
    with InferqClient(intake) as client:
        assert type(client.producer).__name__ == "ConfluentProducer"
        for r in reqs:  # the first continues a caller's trace (read by librdkafka's consumer: issue 19)
            client.publish(r, traceparent=f"00-{TRACE_ID}-00f067aa0ba902b7-01" if r is reqs[0] else None)
        # invalid (no inputs): dead-lettered through the intake's librdkafka producer, and answered
        body = {"schema_version": 1, "request_id": bad_id, "task": "embed", "model": MODEL}
        client.publish_raw(bad_id, json.dumps(body).encode()).get(timeout=10)
        client.flush()
        eventually(lambda: admitted(client, reqs), timeout_s=60, what="every request admitted")
        statuses = {r.status for r in client.store.get_many([r.request_id for r in reqs]).values() if r}
        assert statuses == {ResultStatus.QUEUED}  # no worker: admitted and waiting
        first, second = client.result(reqs[0].request_id), client.result(reqs[1].request_id)
        assert first is not None and first.trace_id == TRACE_ID
        assert second is not None and second.trace_id not in (None, TRACE_ID)  # a new trace of its own
        failed = eventually(lambda: client.result(bad_id), what="the invalid request answered")
        assert failed.status is ResultStatus.FAILED and failed.error.code is ErrorCode.VALIDATION_ERROR
    letter = dead_letters(intake, {bad_id})[bad_id]
    assert letter.error.code is ErrorCode.VALIDATION_ERROR


def test_a_lone_request_is_picked_up_at_once_by_its_doorbell(intake):
    """The client rings once per partition after a round of deliveries; the idle intake, its fetching
    paused while it waits, resumes at once (librdkafka alone would take ~0.5 s after a pause)."""
    with InferqClient(intake) as client:
        for i in range(5):
            (req,) = valid(1, f"lone {i}")
            t0 = time.monotonic()
            client.publish(req)
            eventually(lambda r=req: client.result(r.request_id), timeout_s=10, what="the lone request")
            assert time.monotonic() - t0 < 0.4, "a rung intake waited as if nobody had rung"
            time.sleep(0.2)  # idle again: fetching paused


def test_a_record_librdkafka_cannot_decode_is_dead_lettered_and_reading_goes_on(intake):
    topic = requests_topic(intake)
    before, after = valid(1, "before the bad header") + valid(1, "after the bad header")
    raw = KafkaProducer(**kafka_options(intake), acks="all")
    try:
        raw.send(topic, partition=0, key=b"b", value=before.wire_json().encode()).get(timeout=10)
        bad = raw.send(topic, partition=0, key=b"bad-header", value=b"{}", headers=[(RawName("x"), b"v")])
        offset = bad.get(timeout=10).offset
        raw.send(topic, partition=0, key=b"a", value=after.wire_json().encode()).get(timeout=10)
    finally:
        raw.close()
    with InferqClient(intake) as client:
        eventually(lambda: admitted(client, [before, after]), timeout_s=60, what="the records around it")
    # its letter has no key and no payload (its bytes could not be read): the only such letter here
    letter = dead_letters(intake, {""}, by_record_key=True)[""]
    assert (letter.source_partition, letter.source_offset) == (0, offset)
    assert letter.error.code is ErrorCode.INVALID_ENCODING


def test_records_a_foreign_client_can_write_are_dead_lettered_and_reading_goes_on(intake):
    """What kcat or another librdkafka client can produce, through the librdkafka intake: a
    tombstone, a record without a key, a header without a value, thousands of headers, header
    values that are not UTF-8, a gzip-compressed batch. Each is dead-lettered or admitted as it
    deserves; none stops the intake (the records after them are admitted)."""
    from confluent_kafka import Producer

    topic = requests_topic(intake)
    keyless, headed, many, gzipped, after = valid(5, "foreign")
    producer = Producer({"bootstrap.servers": intake.kafka_bootstrap_servers, "compression.type": "gzip"})
    producer.produce(topic, partition=1, key=b"tombstone-key", value=None)
    producer.produce(topic, partition=1, key=None, value=keyless.wire_json().encode())
    producer.produce(
        topic,
        partition=1,
        key=b"h",
        value=headed.wire_json().encode(),
        headers=[("x-null", None), ("x", b"\xff")],
    )
    producer.produce(
        topic,
        partition=1,
        key=b"m",
        value=many.wire_json().encode(),
        headers=[(f"h{i}", b"\x80" * 8) for i in range(5_000)],
    )
    producer.produce(topic, partition=1, key=b"g", value=gzipped.wire_json().encode())
    producer.produce(topic, partition=1, key=b"not-json", value=b"\x00\xff" * 100)
    producer.produce(topic, partition=1, key=b"a", value=after.wire_json().encode())
    assert producer.flush(10) == 0
    with InferqClient(intake) as client:
        eventually(
            lambda: admitted(client, [keyless, headed, many, gzipped, after]), 60, "the foreign records"
        )
        assert client.result(after.request_id).status is ResultStatus.QUEUED
    letters = dead_letters(intake, {"tombstone-key", "not-json"}, by_record_key=True)
    assert letters["tombstone-key"].error.code is ErrorCode.INVALID_JSON
    assert letters["not-json"].error.code in (ErrorCode.INVALID_ENCODING, ErrorCode.INVALID_JSON)
