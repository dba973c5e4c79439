"""The client's trace context: each publication is a span of its own (a child of the caller's
context, else a new trace's root); a caller's invalid traceparent is refused with what to send."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers import cli
from producers.client import _publish_span
from schemas.tracing import TraceContext, parse_traceparent

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_new_trace_per_publication_unless_the_caller_gives_one() -> None:
    a, b = _publish_span(None), _publish_span(None)
    assert a.trace_id != b.trace_id and a.parent_id is None
    assert parse_traceparent(a.headers()[0][1]) == TraceContext(a.trace_id, a.span_id)
    given = _publish_span(f"00-{TRACE}-{PARENT}-01")
    assert given.trace_id == TRACE and given.parent_id == PARENT and given.span_id != PARENT
    ctx = TraceContext(TRACE, PARENT)
    assert _publish_span(ctx).trace_id == TRACE and _publish_span(ctx).parent_id == PARENT


@pytest.mark.parametrize("bad", ["", "nope", f"00-{TRACE.upper()}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01"])
def test_an_invalid_traceparent_from_the_caller_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="W3C trace context"):
        _publish_span(bad)


def test_inferq_submit_refuses_an_invalid_traceparent_before_connecting(tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("hello\n")
    assert cli.main(["--traceparent", "00-not-a-trace", str(texts)]) == 2
