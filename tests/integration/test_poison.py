"""A request whose worker died on every attempt is failed as poison and dead-lettered with its count.

The earlier deaths are recorded the way the worker records starts (the ``attempts`` field of the
request's hash); the request is then delivered through Kafka like any redelivery, and the real
worker refuses to run it a further time.
"""

from __future__ import annotations

from kafka import KafkaProducer

from ops.stack import Stack
from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import requests_topic, result_key
from schemas.results import queued_result
from schemas.settings import Settings
from tests.stack import dead_letters
from workers.store.store import Admission, request_digest


def test_poison_request_is_failed_and_dead_lettered_with_its_attempts(
    stack: Stack, settings: Settings, client: InferqClient
) -> None:
    store = client.store
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="the input that kept crashing")
    healthy = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="a healthy neighbour")
    assert store.admit([(request_digest(req), queued_result(req, {}))]) == [Admission.NEW]
    store.client.hset(result_key(settings, req.request_id), "attempts", settings.max_attempts)
    producer = KafkaProducer(**kafka_options(settings), acks="all")
    for r in (req, healthy):
        producer.send(requests_topic(settings), key=r.request_id.encode(), value=r.model_dump_json().encode())
    producer.flush()
    producer.close()

    results = client.wait_all([req.request_id, healthy.request_id], timeout_s=60)
    poisoned = results[req.request_id]
    assert poisoned is not None and poisoned.status is ResultStatus.FAILED
    assert poisoned.error is not None and poisoned.error.code is ErrorCode.POISON_MESSAGE
    assert poisoned.outputs is None
    neighbour = results[healthy.request_id]
    assert neighbour is not None and neighbour.status is ResultStatus.DONE

    letter = dead_letters(settings, {req.request_id})[req.request_id]
    assert letter.error.code is ErrorCode.POISON_MESSAGE
    assert letter.attempts == settings.max_attempts
    assert letter.source_topic == requests_topic(settings) and letter.source_offset >= 0
    assert InferenceRequest.model_validate_json(letter.payload) == req
