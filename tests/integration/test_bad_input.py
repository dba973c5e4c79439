"""A corpus of bad inputs, through Kafka and through HTTP: each gets a typed answer, valid traffic
keeps flowing beside it, and nothing takes a process down."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from kafka.errors import MessageSizeTooLargeError

from schemas.messages import ResultStatus, new_request_id
from tests.stack import dead_letters

MODEL, INTENT = "all-MiniLM-L6-v2", "minilm-intent"


def req(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schema_version": 1,
        "request_id": new_request_id(),
        "task": "embed",
        "model": MODEL,
    }
    body["inputs"] = "a fine text"
    body.update(over)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()
BROKER_REFUSES = "broker refuses"

# name, raw Kafka value, dead-letter code, HTTP status and code for the same body (None: any typed code)
CASES: list[tuple[str, bytes, str, int | None, str | None]] = [
    ("not json", b"{not json", "invalid_json", 422, "invalid_json"),
    ("not utf-8", b"\xff\xfe{}", "invalid_encoding", 422, "invalid_encoding"),
    ("empty message", b"", "invalid_json", 422, "invalid_json"),
    ("json array", b"[1, 2]", "invalid_json", 422, "invalid_json"),
    ("json string", b'"hello"', "invalid_json", 422, "invalid_json"),
    ("json number", b"42", "invalid_json", 422, "invalid_json"),
    ("json null", b"null", "invalid_json", 422, "invalid_json"),
    ("truncated json", json.dumps(req())[:-5].encode(), "invalid_json", 422, "invalid_json"),
    ("schema version 2", json.dumps(req(schema_version=2)).encode(), "unsupported_schema_version", 422, None),
    (
        "schema version as text",
        json.dumps(req(schema_version="1")).encode(),
        "unsupported_schema_version",
        422,
        None,
    ),
    (
        "schema version missing",
        json.dumps(req(schema_version=DROP)).encode(),
        "unsupported_schema_version",
        422,  # one contract (issue 15, point 17): required on the wire, over Kafka and HTTP alike
        "unsupported_schema_version",
    ),
    ("task missing", json.dumps(req(task=DROP)).encode(), "validation_error", 422, "validation_error"),
    ("unknown task", json.dumps(req(task="translate")).encode(), "validation_error", 422, "validation_error"),
    ("model missing", json.dumps(req(model=DROP)).encode(), "validation_error", 422, "validation_error"),
    ("unknown model", json.dumps(req(model="gpt-17")).encode(), "unknown_model", 422, "unknown_model"),
    (
        "task the model does not serve",
        json.dumps(req(task="classify")).encode(),
        "task_model_mismatch",
        422,
        None,
    ),
    ("inputs missing", json.dumps(req(inputs=DROP)).encode(), "validation_error", 422, "validation_error"),
    ("empty inputs list", json.dumps(req(inputs=[])).encode(), "validation_error", 422, "validation_error"),
    ("empty text", json.dumps(req(inputs="")).encode(), "validation_error", 422, "validation_error"),
    ("inputs a number", json.dumps(req(inputs=7)).encode(), "validation_error", 422, "validation_error"),
    (
        "a number among inputs",
        json.dumps(req(inputs=["ok", 3])).encode(),
        "validation_error",
        422,
        "validation_error",
    ),
    (
        "inputs an object",
        json.dumps(req(inputs={"text": "x"})).encode(),
        "validation_error",
        422,
        "validation_error",
    ),
    (
        "too many inputs",
        json.dumps(req(inputs=["x"] * 65)).encode(),
        "validation_error",
        422,
        "validation_error",
    ),
    (
        "text over the limit",
        json.dumps(req(inputs="y" * 20_001)).encode(),
        "validation_error",
        422,
        "validation_error",
    ),
    (
        "deadline without a zone",
        json.dumps(req(deadline="2030-01-01T00:00:00")).encode(),
        "validation_error",
        422,
        None,
    ),
    ("deadline not a date", json.dumps(req(deadline="tomorrow")).encode(), "validation_error", 422, None),
    ("unknown priority", json.dumps(req(priority="urgent")).encode(), "validation_error", 422, None),
    ("top_k zero", json.dumps(req(top_k=0)).encode(), "validation_error", 422, None),
    ("top_k as text", json.dumps(req(top_k="five")).encode(), "validation_error", 422, None),
    ("request id too short", json.dumps(req(request_id="abc")).encode(), "validation_error", 422, None),
    (
        "request id with spaces",
        json.dumps(req(request_id="not a valid id at all!")).encode(),
        "validation_error",
        422,
        None,
    ),
    ("tenant a number", json.dumps(req(tenant=123)).encode(), "validation_error", 422, None),
    ("tenant with a space", json.dumps(req(tenant="acme corp")).encode(), "validation_error", 422, None),
    ("unknown field", json.dumps(req(temperature=0.7)).encode(), "validation_error", 422, None),
    # the broker refuses it at publish time (the producer gets Kafka's typed error); the intake's own
    # check, for brokers with a higher limit, is in tests/unit/schemas/test_validation.py
    ("oversized message", json.dumps(req(inputs=["z" * 19_000] * 60)).encode(), BROKER_REFUSES, 413, None),
]


def test_every_bad_record_is_dead_lettered_with_its_code_while_valid_traffic_flows(client, settings):
    assert len(CASES) >= 30
    keys = {f"bad-{i}-{uuid.uuid4().hex[:6]}": case for i, case in enumerate(CASES)}
    good = []
    for key, (_, raw, code, _, _) in list(keys.items()):
        if code == BROKER_REFUSES:
            # its own producer, one that lets it past the client-side limit: a batch the broker
            # refuses is refused whole, so it must not share one with the other records
            big = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 << 20)
            with pytest.raises(MessageSizeTooLargeError):
                big.send("inferq.requests", key=key.encode(), value=raw).get(timeout=30)
            big.close()
            del keys[key]
        else:
            client.publish_raw(key, raw)
        good.append(client.submit("embed", MODEL, f"valid between bad ones {key}"))
    # odd headers on a valid record change nothing
    odd = client.submit("embed", MODEL, "with odd headers")
    client.producer.send(
        "inferq.requests",
        key=b"odd",
        value=json.dumps(req(inputs="odd headers too")).encode(),
        headers=[("x-binary", b"\x00\xff"), ("", b""), ("dup", b"1"), ("dup", b"2")],
    )
    past = req(deadline="2001-01-01T00:00:00Z")  # valid, but already late: ends expired, typed
    client.publish_raw(past["request_id"], json.dumps(past).encode())
    client.flush()

    # other tests of the session dead-letter records on the same topic too: only ours are checked
    letters = dead_letters(settings, set(keys), by_record_key=True)
    assert set(keys) <= set(letters), f"no dead letter for: {[keys[k][0] for k in set(keys) - set(letters)]}"
    for key, (name, _, code, _, _) in keys.items():
        assert letters[key].error.code.value == code, (name, letters[key].error)
        assert letters[key].error.message and letters[key].source_topic == "inferq.requests", name
    # where the bad record carried a readable request id, its sender also gets a failed result
    for key, (name, _, code, _, _) in keys.items():
        rid = letters[key].request_id
        if rid:
            result = client.result(rid)
            assert result is not None and result.status is ResultStatus.FAILED, name
            assert result.error.code.value == code, name

    results = client.wait_all([*good, odd, past["request_id"]], timeout_s=120)
    assert all(results[r].status is ResultStatus.DONE for r in [*good, odd])
    assert results[past["request_id"]].status is ResultStatus.EXPIRED
    assert results[past["request_id"]].error.code.value == "deadline_expired"


@pytest.fixture
def api(stack, settings):
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=30) as c:
        yield c


def test_the_same_corpus_over_http_gets_typed_errors(api, client):
    for name, raw, _, status, code in CASES:
        r = api.post("/v1/requests", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == status, (name, r.status_code, r.text[:200])
        if status >= 400:
            error = r.json()["error"]
            assert error["code"] and error["message"], name
            if code:
                assert error["code"] == code, (name, error)
    ok = api.post(
        "/v1/requests", json={"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "still fine"}
    )
    assert ok.status_code == 202
    assert client.wait(ok.json()["request_id"], timeout_s=60).status is ResultStatus.DONE
