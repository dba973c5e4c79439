"""W3C trace context (schemas/tracing.py): strict parsing, hostile headers ignored at bounded cost,
formatting, and the trace riding in the work item and the result."""

from __future__ import annotations

import json
import time

import pytest

from schemas import results, tracing
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus
from schemas.tracing import TraceContext, from_http_headers, from_record_headers, parse_traceparent
from schemas.work import Handoff, WorkItem

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{PARENT}-01"
REQ = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=["a"], tenant="acme")


def test_the_spec_example_is_read() -> None:
    ctx = parse_traceparent(GOOD)
    assert ctx == TraceContext(TRACE, PARENT, 1)
    assert ctx is not None and ctx.sampled and ctx.traceparent == GOOD
    assert parse_traceparent(GOOD.encode()) == ctx
    assert parse_traceparent(f" {GOOD}\t") == ctx  # optional whitespace of an HTTP header
    unsampled = parse_traceparent(f"00-{TRACE}-{PARENT}-00")
    assert unsampled is not None and not unsampled.sampled
    assert unsampled.traceparent.endswith("-00")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00",
        GOOD[:-1],  # too short
        GOOD + "0",  # version 00 is exactly 55 characters
        GOOD + "-more",  # version 00 has no more fields
        GOOD.upper(),
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"00-{TRACE}-{PARENT.upper()}-01",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"0g-{TRACE}-{PARENT}-01",
        f"00_{TRACE}_{PARENT}_01",
        f"00-{TRACE}-{PARENT}-0x",
        f"00-{TRACE[:-1]}é-{PARENT}-01",  # non-ASCII
        f"00-{TRACE}-{PARENT}-01".replace("-", "\u2010"),
        f"01-{TRACE}-{PARENT}-01x",  # a later version: what follows the flags must start with '-'
        "00-" + "a" * 10_000,  # 10 KB
        "x" * 10_240,
    ],
)
def test_hostile_or_malformed_values_are_ignored(value: str) -> None:
    assert parse_traceparent(value) is None
    assert parse_traceparent(value.encode("utf-8")) is None


def test_non_utf8_bytes_are_ignored() -> None:
    assert parse_traceparent(b"\xff\xfe" + GOOD.encode()[2:]) is None


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    ctx = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds")
    assert ctx == TraceContext(TRACE, PARENT, 1)
    assert parse_traceparent(f"cc-{TRACE}-{PARENT}-01") == ctx
    assert ctx is not None and ctx.traceparent == GOOD  # we speak version 00


def test_only_the_sampled_flag_is_kept() -> None:
    ctx = parse_traceparent(f"00-{TRACE}-{PARENT}-ff")
    assert ctx is not None and ctx.flags == 1


def test_parsing_a_10kb_header_costs_no_more_than_a_good_one() -> None:
    huge = ("00-" + TRACE + "-" + PARENT + "-01" + "-x" * 5_000).encode()
    start = time.perf_counter()
    for _ in range(2_000):
        assert parse_traceparent(huge) is None
    assert (time.perf_counter() - start) / 2_000 < 50e-6  # a length check: well under 50 µs each


def test_tracestate_is_carried_only_when_short_and_printable() -> None:
    assert parse_traceparent(GOOD, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") is not None
    ctx = parse_traceparent(GOOD, b"rojo=00f067aa0ba902b7")
    assert ctx is not None and ctx.state == "rojo=00f067aa0ba902b7"
    states: list[str | bytes] = [
        "x" * (tracing.TRACESTATE_MAX_CHARS + 1),
        "caf\u00e9=1",
        b"\xff=1",
        "a=1\nb=2",
        "",
    ]
    for state in states:
        ctx = parse_traceparent(GOOD, state)
        assert ctx is not None and ctx.state is None  # the parent stands; the state is dropped
    assert parse_traceparent("bad", "rojo=1") is None


def test_record_headers() -> None:
    assert from_record_headers(None) == tracing.NOTHING
    assert from_record_headers([("other", b"1")]) == tracing.NOTHING
    got = from_record_headers(
        [("traceparent", GOOD.encode()), ("tracestate", b"a=1"), ("tracestate", b"b=2")]
    )
    assert got == tracing.Incoming(TraceContext(TRACE, PARENT, 1, "a=1,b=2"), False)
    # repeated, invalid, 10 KB, upper case, a value that is not bytes: ignored, and said so
    for headers in [
        [("traceparent", GOOD.encode()), ("traceparent", GOOD.encode())],
        [("traceparent", b"00-nonsense")],
        [("traceparent", b"0" * 10_240)],
        [("traceparent", GOOD.upper().encode())],
        [("traceparent", None)],
    ]:
        assert from_record_headers(headers) == tracing.Incoming(None, True)  # type: ignore[arg-type]
    many_states = [("traceparent", GOOD.encode()), *[("tracestate", b"a=1")] * 200]  # 800 bytes
    incoming = from_record_headers(many_states)
    assert incoming.parent is not None and incoming.parent.state is None


def test_http_headers() -> None:
    assert from_http_headers([], []) == tracing.NOTHING
    assert from_http_headers([GOOD], ["a=1"]).parent == TraceContext(TRACE, PARENT, 1, "a=1")
    assert from_http_headers([GOOD, GOOD], []) == tracing.Incoming(None, True)
    long_state = from_http_headers([GOOD], ["a=1"] * 200).parent
    assert long_state is not None and long_state.state is None
    assert from_http_headers(["nope"], []) == tracing.Incoming(None, True)


def test_received_continues_the_senders_trace_or_starts_one() -> None:
    parent = TraceContext(TRACE, PARENT, 1, "a=1")
    child = tracing.received(parent)
    assert child.trace_id == TRACE and child.span_id != PARENT and child.parent_id == PARENT
    assert child.state == "a=1" and tracing.valid_span_id(child.span_id)
    fresh = tracing.received(None)
    assert tracing.valid_trace_id(fresh.trace_id) and fresh.parent_id is None and fresh.sampled
    assert parse_traceparent(fresh.traceparent) == TraceContext(fresh.trace_id, fresh.span_id, 1)
    assert fresh.headers() == [("traceparent", fresh.traceparent.encode())]
    assert child.headers()[1] == ("tracestate", b"a=1")


def test_the_work_item_carries_the_trace_and_older_items_still_parse() -> None:
    ctx = TraceContext(TRACE, PARENT, 1, "a=1")
    item = WorkItem(request=REQ, trace=ctx)
    wire = item.wire()
    assert wire["trace"] == {"traceparent": GOOD, "tracestate": "a=1"}
    json.dumps(wire)
    assert WorkItem.parse(json.loads(json.dumps(wire))).trace == ctx
    # the stored hand-off (a message sent again) keeps it
    assert Handoff.of("q", 1, item).work().trace == ctx
    # no trace (an older intake): none; an older worker ignores the key (extra="ignore")
    assert "trace" not in WorkItem(request=REQ).wire()
    assert WorkItem.parse({"request": REQ.wire_dict()}).trace is None
    # a malformed trace is not the request's fault: served without one
    for bad in [
        "00-x",
        {"traceparent": "nope"},
        {"traceparent": 5},
        {"traceparent": GOOD, "tracestate": 5},
        [],
    ]:
        parsed = WorkItem.parse({**wire, "trace": bad})
        assert parsed.trace is None and parsed.request == REQ


def test_the_result_carries_the_trace_id_and_its_json_is_the_models() -> None:
    ctx = TraceContext(TRACE, PARENT)
    done = results.result(REQ, ResultStatus.DONE, {"done_ms": 1.0}, trace=ctx)
    assert done.trace_id == TRACE and done.span_id == PARENT
    text = results.result_json(done)
    assert text == done.model_dump_json() and json.loads(text)["trace_id"] == TRACE
    back = InferenceResult.model_validate_json(text)
    assert back.trace_id == TRACE and back.span_id is None  # the span id is never serialized
    assert results.queued_result(REQ, {}, ctx).trace_id == TRACE
    assert results.result(REQ, ResultStatus.DONE, {}).trace_id is None
    with pytest.raises(ValueError):
        InferenceResult.model_validate({**json.loads(text), "trace_id": TRACE.upper()})
