import json

import pytest

from schemas.errors import ErrorCode, InvalidRequest
from schemas.settings import Settings
from schemas.validation import decode_json, parse_request, salvage_request_id

S = Settings(max_inputs_per_request=3, max_text_chars=50, kafka_max_message_bytes=2_000)
OK = {"schema_version": 1, "task": "embed", "model": "all-MiniLM-L6-v2", "inputs": "hello"}


def raw(**over):
    return json.dumps({**OK, **over}).encode()


def code_of(value):
    with pytest.raises(InvalidRequest) as e:
        parse_request(value, S)
    assert e.value.message and e.value.hint  # says what was wrong and what to do
    return e.value.code


def test_a_valid_message_parses():
    assert parse_request(raw(), S).texts() == ["hello"]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (None, ErrorCode.INVALID_JSON),
        (b"\xff\xfe not utf-8", ErrorCode.INVALID_ENCODING),
        (b"{not json", ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.INVALID_JSON),
        (b'"just a string"', ErrorCode.INVALID_JSON),
        (b"x" * 3_000, ErrorCode.MESSAGE_TOO_LARGE),
        (
            json.dumps({k: v for k, v in OK.items() if k != "schema_version"}).encode(),
            ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
        ),
        (raw(schema_version=99), ErrorCode.UNSUPPORTED_SCHEMA_VERSION),
        (raw(schema_version="1"), ErrorCode.UNSUPPORTED_SCHEMA_VERSION),
        (raw(task="summarize"), ErrorCode.VALIDATION_ERROR),
        (raw(inputs=[]), ErrorCode.VALIDATION_ERROR),
        (raw(inputs=""), ErrorCode.VALIDATION_ERROR),
        (raw(inputs=[1, 2]), ErrorCode.VALIDATION_ERROR),
        (raw(model="no-such-model"), ErrorCode.UNKNOWN_MODEL),
        (raw(task="classify"), ErrorCode.TASK_MODEL_MISMATCH),
        (raw(inputs=["a", "b", "c", "d"]), ErrorCode.VALIDATION_ERROR),
        (raw(inputs="y" * 51), ErrorCode.VALIDATION_ERROR),
        (raw(extra_field=True), ErrorCode.VALIDATION_ERROR),
    ],
)
def test_bad_messages_get_typed_errors(value, code):
    assert code_of(value) is code


def test_validation_error_carries_the_field_errors():
    with pytest.raises(InvalidRequest) as e:
        parse_request(raw(top_k=-1), S)
    assert e.value.detail[0]["loc"] == ["top_k"]
    assert e.value.info().code is ErrorCode.VALIDATION_ERROR


def test_request_id_is_salvaged_only_when_well_formed():
    assert salvage_request_id(raw(request_id="A" * 20, model="nope")) == "A" * 20
    assert salvage_request_id(raw(request_id="short")) is None
    assert salvage_request_id(b"\xff") is None
    assert salvage_request_id(b"[]") is None


def test_the_shared_decoder_answers_as_json_loads_did():
    """One decoder serves every record (json.loads with hooks built one per call): the messages of
    what it refuses stay json.loads's, the byte-order mark included."""
    for raw in ("\ufeff{}", '{"a": }', "[1, 2", '{"a": 1} x'):
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(raw)
        with pytest.raises(InvalidRequest) as got:
            decode_json(raw.encode())
        assert got.value.code == ErrorCode.INVALID_JSON
        assert str(expected.value) in got.value.message
    assert decode_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("item", [1, "", None, {"a": 1}, "ok"])
def test_a_list_of_inputs_over_the_limit_is_refused_before_each_is_validated(item):
    """A 1 MB record holds some 200,000 bad inputs; validating each (one error per item, then their
    explanation) cost the intake 1.5-2.3 s per record where the operator's limit refuses them all."""
    settings = Settings()
    count = settings.kafka_max_message_bytes // 12
    with pytest.raises(InvalidRequest) as e:
        parse_request(raw(inputs=[item] * count), settings)
    assert e.value.code is ErrorCode.VALIDATION_ERROR
    assert e.value.message == f"{count} inputs; the limit is {settings.max_inputs_per_request}"
    assert e.value.detail is None  # no per-item report was built


def test_a_list_at_the_limit_is_validated_item_by_item():
    with pytest.raises(InvalidRequest, match=r"inputs.1: String should have at least 1 character"):
        parse_request(raw(inputs=["a", "", "c"]), S)
    assert parse_request(raw(inputs=["a", "b", "c"]), S).texts() == ["a", "b", "c"]
