"""Poison records at the intake's gate (issue 15, points 1 and 2): whatever the bytes, decoding
ends in a typed :class:`InvalidRequest` at a bounded cost, and the dead letter for any record fits
the producer's limit, keeping the original's size and digest."""

from __future__ import annotations

import hashlib
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka.structs import TopicPartition

from schemas import results as deadletter
from schemas.errors import ErrorCode, InvalidRequest
from schemas.messages import DeadLetter, ErrorInfo
from schemas.settings import Settings
from schemas.validation import parse_request, salvage_request_id
from tests.fakes import FakeProducer
from workers.intake.backpressure import PartitionHold
from workers.transport import letters

S = Settings()
RID = "poison-record-0000001"
OK = {"schema_version": 1, "request_id": RID, "task": "embed", "model": "all-MiniLM-L6-v2", "inputs": "hi"}


def with_field(raw_value: str) -> bytes:
    """A valid request with ``"x": <raw_value>`` spliced in as raw JSON text."""
    return (json.dumps(OK)[:-1] + f', "x": {raw_value}}}').encode()


POISON = {
    "50,000 brackets": b"[" * 50_000,
    "deep object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    "deep but closed": with_field("[" * 5_000 + "]" * 5_000),
    "int over 4,300 digits": with_field("9" * 5_000),
    "int of 100 digits": with_field("1" * 100),
    "negative huge int": with_field("-" + "7" * 4_400),
    "NaN": with_field("NaN"),
    "Infinity": with_field("Infinity"),
    "-Infinity": with_field("-Infinity"),
    "float out of range": with_field("1e400"),
    "lone high surrogate": with_field('"\\ud800"'),
    "lone low surrogate in inputs": json.dumps({**OK, "inputs": "x"}).replace('"x"', '"\\udc00"').encode(),
    "encoded surrogate (CESU)": b'{"inputs": "\xed\xa0\x80"}',
}


@pytest.mark.parametrize("name", sorted(POISON))
def test_poison_records_are_typed_invalid_json_at_bounded_cost(name):
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as e:
        parse_request(POISON[name], S)
    assert e.value.code in (ErrorCode.INVALID_JSON, ErrorCode.INVALID_ENCODING), e.value.code
    assert e.value.message and e.value.hint and len(e.value.message) < 400
    # a bound on cost, not a speed goal: a quadratic or backtracking decoder takes minutes on
    # these, a linear one milliseconds; 5 s keeps a loaded 2-core CI machine out of it
    assert time.perf_counter() - started < 5.0, "decoding a poison record must stay cheap"
    salvage_request_id(POISON[name])  # never raises


def test_a_valid_surrogate_pair_and_big_seed_still_parse():
    emoji = json.dumps({**OK, "inputs": "smile \U0001f600"}).encode()  # json.dumps writes \\ud83d\\ude00
    assert b"\\ud83d" in emoji
    assert parse_request(emoji, S).texts() == ["smile \U0001f600"]


def test_salvage_reads_the_id_of_a_record_poisoned_elsewhere():
    assert salvage_request_id(with_field("NaN")) is None  # not JSON: no id trusted
    assert salvage_request_id(json.dumps({**OK, "task": "nope"}).encode()) == RID


# -- dead letters -------------------------------------------------------------------------------


def letter_of(payload: bytes | str, settings: Settings = S, **kw) -> deadletter.Letter:
    error = ErrorInfo(code=ErrorCode.INVALID_ENCODING, message="message is not UTF-8", hint="encode as UTF-8")
    return deadletter.dead_letter(settings, kw.pop("error", error), payload, source_topic="t", key=b"k", **kw)


def test_a_400_kb_invalid_utf8_record_makes_a_letter_under_the_cap():
    raw = b"\xff" * 409_600  # every byte a 3-byte U+FFFD once decoded: a 1.2 MB letter before
    built = letter_of(raw)
    assert len(built.value) <= deadletter.letter_cap(S) < S.kafka_max_request_bytes
    letter = DeadLetter.model_validate_json(built.value)
    assert letter.payload_truncated and letter.payload_bytes == len(raw)
    assert letter.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(letter.payload) > 0 and set(letter.payload) == {"\ufffd"}


def test_a_small_record_is_kept_whole():
    letter = letter_of(b"{not json").letter
    assert letter.payload == "{not json" and not letter.payload_truncated and letter.payload_bytes == 9


def test_escape_heavy_payload_and_huge_detail_and_key_still_fit():
    raw = b"\x01" * 500_000  # each control byte becomes a 6-byte \\u0001 escape
    error = ErrorInfo(
        code=ErrorCode.VALIDATION_ERROR, message="m" * 300_000, hint="h", detail=["d" * 1_000] * 999
    )
    built = deadletter.dead_letter(S, error, raw, key=b"K" * 900_000)
    assert len(built.value) <= deadletter.letter_cap(S)
    assert built.key is not None and len(built.key) <= deadletter.KEY_MAX_BYTES
    letter = DeadLetter.model_validate_json(built.value)
    assert letter.payload_bytes == 500_000 and letter.error.code is ErrorCode.VALIDATION_ERROR


def test_the_cap_stays_below_the_producer_limit_whatever_the_settings():
    tight = Settings(kafka_max_request_bytes=65_536, deadletter_max_bytes=1_000_000)
    assert deadletter.letter_cap(tight) <= 65_536 - deadletter.FRAMING_BYTES
    assert len(letter_of(b"\xff" * 300_000, tight).value) <= deadletter.letter_cap(tight)


def test_minimal_letter_drops_the_payload_but_keeps_size_and_digest():
    built = letter_of(b"\xff" * 10_000)
    small = deadletter.minimal(built).letter
    assert small.payload == "" and small.payload_truncated and small.payload_bytes == 10_000
    assert small.payload_sha256 == built.letter.payload_sha256


def test_a_size_refusal_is_permanent_a_minimal_letter_is_sent_instead():
    from kafka.errors import MessageSizeTooLargeError

    for at_send in (True, False):
        producer = FakeProducer([MessageSizeTooLargeError("too big")], at_send=at_send)
        assert letters.deliver(producer, S, [letter_of(b"x" * 5_000)], 1.0) == 0
        assert len(producer.sent) == 2
        assert DeadLetter.model_validate_json(producer.values[1] or b"").payload == ""


def test_a_transient_send_failure_is_raised_so_the_poll_is_rewound():
    from kafka.errors import KafkaTimeoutError

    with pytest.raises(KafkaTimeoutError):
        letters.deliver(FakeProducer([KafkaTimeoutError()]), S, [letter_of(b"x")], 1.0)


# -- fuzz -----------------------------------------------------------------------------------------

json_text = st.recursive(
    st.sampled_from(["null", "true", "1", "-0", "1e999", "NaN", "Infinity", '"\\ud800"', '"x"', "9" * 4_400]),
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(st.tuples(st.sampled_from(["request_id", "inputs", "task", "a"]), inner), max_size=4).map(
            lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"
        )
    ),
    max_leaves=30,
)
nesting = st.tuples(st.integers(0, 3_000), st.sampled_from(["[", '{"a":'])).map(
    lambda t: (t[1] * t[0]).encode()
)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4_096) | json_text.map(str.encode) | nesting)
def test_fuzz_parse_request_raises_only_invalid_request_and_letters_fit(raw):
    try:
        parse_request(raw, S)
    except InvalidRequest as e:
        assert isinstance(e.code, ErrorCode)
        letter = deadletter.dead_letter(S, e.info(), raw, key=raw[:2_000], request_id=salvage_request_id(raw))
        assert len(letter.value) <= deadletter.letter_cap(S)
        DeadLetter.model_validate_json(letter.value)


@hsettings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=300_000), st.text(max_size=5_000))
def test_fuzz_letters_always_fit(raw, message):
    small = Settings(deadletter_max_bytes=8_192)
    error = ErrorInfo(code=ErrorCode.INVALID_JSON, message=message, hint=message, detail=[message] * 30)
    built = deadletter.dead_letter(small, error, raw, key=raw[:5_000] or None)
    assert len(built.value) <= deadletter.letter_cap(small)
    assert DeadLetter.model_validate_json(built.value).payload_bytes == len(raw)


# -- the paused skim path -------------------------------------------------------------------------


class FakeConsumer:
    """Enough of KafkaConsumer for PartitionHold.skim: one partition with records 10..14."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp, self.positions = tp, {tp: 10}
        self.commits: list[Any] = []

    def assignment(self):
        return {self.tp}

    def seek(self, tp, offset):
        self.positions[tp] = offset

    def resume(self, *tps):
        pass

    def pause(self, *tps):
        pass

    def poll(self, timeout_ms=0):
        start = self.positions[self.tp]
        records = [SimpleNamespace(offset=o, value=b"bad") for o in range(start, 15)]
        self.positions[self.tp] = 15
        return {self.tp: records}

    def commit(self, offsets):
        self.commits.append(offsets)


def test_skim_does_not_move_past_records_whose_handling_failed(monkeypatch):
    tp = TopicPartition("t", 0)
    hold = PartitionHold(SimpleNamespace(paused=True))
    hold.held = {tp: 10}
    consumer = FakeConsumer(tp)

    def fail(polled):
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        hold.skim(consumer, lambda r: r.offset < 12, fail)
    assert hold.held[tp] == 10 and consumer.positions[tp] == 10 and not consumer.commits
    hold._skimmed_s = 0.0
    assert hold.skim(consumer, lambda r: r.offset < 12, lambda polled: sum(map(len, polled.values()))) == 2
    assert hold.held[tp] == 12 and consumer.positions[tp] == 12
    assert consumer.commits[-1][tp].offset == 12
