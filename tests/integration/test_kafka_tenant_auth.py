"""Kafka tenant authentication on the real broker and intake (INFERQ_KAFKA_TENANT_AUTH=signed), and
the topics' retention against the result TTL as the real broker reports it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from pydantic import SecretStr

from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import requests_topic
from schemas.settings import Settings
from tests.stack import dead_letters, eventually, intake_only
from workers.intake.retention import retention_ms_of, retention_warning
from workers.store.store import ResultStore

ALICE, BOB = secrets.token_hex(32), secrets.token_hex(32)


@pytest.fixture(scope="module")
def signed_intake(settings: Settings, tmp_path_factory) -> Iterator[Settings]:
    base = settings.model_copy(
        update={"kafka_tenant_auth": "signed", "kafka_tenant_keys": SecretStr(f"alice:{ALICE},bob:{BOB}")}
    )
    with intake_only(base, tmp_path_factory.mktemp("tenancy")) as s:
        yield s


def embed(tenant: str | None) -> InferenceRequest:
    return InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="who am I", tenant=tenant)


def test_only_a_correctly_signed_tenant_is_admitted(signed_intake: Settings) -> None:
    s = signed_intake
    mine = s.model_copy(update={"kafka_tenant_keys": SecretStr("")})  # a tenant holds only its own key
    good, forged, unsigned, wrong_key = embed("alice"), embed("bob"), embed("bob"), embed("bob")
    with InferqClient(mine, tenant="alice", tenant_key=ALICE) as alice:
        alice.publish(good).get(timeout=10)
        # alice's signature over a body that names bob
        alice.publish_raw(forged.request_id, forged.wire_json().encode(), tenant="alice").get(timeout=10)
    with InferqClient(mine, tenant="bob", tenant_key=ALICE) as mallory:  # bob's name, alice's key
        mallory.publish(wrong_key).get(timeout=10)
    raw = KafkaProducer(**kafka_options(s), acks="all")  # a foreign producer: no headers at all
    raw.send(requests_topic(s), key=unsigned.request_id.encode(), value=unsigned.wire_json().encode())
    raw.flush()
    raw.close()

    store = ResultStore.from_settings(s)
    eventually(lambda: store.get(good.request_id, "alice"), what="the signed request admitted")
    admitted = store.get(good.request_id, "alice")
    # no worker in this stack: admitted = handed on
    assert admitted is not None and admitted.status is ResultStatus.QUEUED
    letters = dead_letters(s, {forged.request_id, unsigned.request_id, wrong_key.request_id})
    assert letters[forged.request_id].error.code is ErrorCode.FORBIDDEN
    assert letters[unsigned.request_id].error.code is ErrorCode.UNAUTHORIZED
    assert letters[wrong_key.request_id].error.code is ErrorCode.UNAUTHORIZED
    # refused records are never answered under the id their writer chose (no squatting)
    for rid in (forged.request_id, unsigned.request_id, wrong_key.request_id):
        assert all(store.get(rid, tenant) is None for tenant in (None, "alice", "bob"))
    assert good.request_id not in letters


def test_a_trusted_process_signs_each_request_as_its_tenant(signed_intake: Settings) -> None:
    """The HTTP API publishes through InferqClient with the deployment's settings (all tenant keys):
    each request is signed as the tenant its API key resolved to."""
    req = embed("bob")
    with InferqClient(signed_intake) as trusted:
        trusted.publish(req).get(timeout=10)
        eventually(lambda: trusted.result(req.request_id), what="bob's request admitted")
        admitted = trusted.result(req.request_id)
    assert admitted is not None and admitted.status is ResultStatus.QUEUED


def test_topics_keep_records_no_longer_than_results(signed_intake: Settings) -> None:
    s = signed_intake
    admin = KafkaAdminClient(**kafka_options(s), request_timeout_ms=10_000)
    try:
        assert retention_ms_of(admin, requests_topic(s)) == s.result_ttl_s * 1000
    finally:
        admin.close()
    assert retention_warning(s) is None
    shorter = s.model_copy(update={"result_ttl_s": 60})
    warning = retention_warning(shorter)
    assert warning is not None and requests_topic(s) in warning and "INFERQ_RESULT_TTL_S=60" in warning
