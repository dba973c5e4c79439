"""The intake's span for a record (workers/intake/refuse.py ``Refusals._trace``): a child of the
record's ``traceparent``, else a new trace; a hostile header is ignored and counted, never raised."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from schemas.observer import Observer
from workers.intake.refuse import Refusals

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


class Counting(Observer):
    def __init__(self) -> None:
        self.ignored: list[str] = []

    def trace_ignored(self, source: str) -> None:
        self.ignored.append(source)


def intake() -> tuple[Refusals, Counting]:
    refusals, observer = Refusals(), Counting()
    refusals.observer = observer
    return refusals, observer


def record(headers: list[tuple[str, Any]] | None) -> Any:
    return cast(Any, SimpleNamespace(headers=headers))


def test_a_records_traceparent_is_continued() -> None:
    refusals, observer = intake()
    span = refusals._trace(record([("traceparent", f"00-{TRACE}-{PARENT}-01".encode())]))
    assert span.trace_id == TRACE and span.parent_id == PARENT and span.span_id != PARENT
    assert observer.ignored == []


def test_without_one_a_trace_starts_and_nothing_is_counted() -> None:
    refusals, observer = intake()
    a, b = refusals._trace(record(None)), refusals._trace(record([("other", b"x")]))
    assert a.trace_id != b.trace_id and a.parent_id is None and observer.ignored == []


def test_hostile_headers_start_a_trace_and_are_counted() -> None:
    refusals, observer = intake()
    good = f"00-{TRACE}-{PARENT}-01".encode()
    hostile: list[list[tuple[str, Any]]] = [
        [("traceparent", good), ("traceparent", good)],
        [("traceparent", good.upper())],
        [("traceparent", b"\xff" * 10_240)],
        [("traceparent", "00-é".encode())],
        [("traceparent", None)],
        [("traceparent", b"")],
    ]
    for headers in hostile:
        span = refusals._trace(record(headers))
        assert span.trace_id != TRACE and span.parent_id is None
    assert observer.ignored == ["kafka"] * len(hostile)
