"""ECS ``trace.id``/``span.id`` on a request's records and a batch's (workers/telemetry/events.py)."""

from __future__ import annotations

import logging

import pytest

from schemas.messages import InferenceRequest, ResultStatus
from schemas.observer import BatchStats
from schemas.results import result
from schemas.settings import Settings
from schemas.tracing import TraceContext
from workers.telemetry.events import BATCH_DATASET, REQUEST_DATASET, RESULTS_DATASET, TRACE_IDS_MAX
from workers.telemetry.observe import Telemetry
from workers.telemetry.template import PROPERTIES


def records(caplog: pytest.LogCaptureFixture, dataset: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event.dataset", None) == dataset]


def test_each_request_record_and_the_write_record_carry_the_trace(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "inferq.events")
    traces = [TraceContext.new() for _ in range(3)]
    written = [
        result(
            InferenceRequest(task="embed", model="echo-384", inputs=f"t{i}"), ResultStatus.DONE, {}, trace=t
        )
        for i, t in enumerate(traces)
    ]
    untraced = result(InferenceRequest(task="embed", model="echo-384", inputs="x"), ResultStatus.DONE, {})
    Telemetry(Settings(log_ship=False)).results_written([*written, untraced])
    by_request = {getattr(r, "inferq.request_id"): r for r in records(caplog, REQUEST_DATASET)}
    for res, t in zip(written, traces, strict=True):
        rec = by_request[res.request_id]
        assert getattr(rec, "trace.id") == t.trace_id and getattr(rec, "span.id") == t.span_id
    assert not hasattr(by_request[untraced.request_id], "trace.id")  # an older intake's item: none
    (write,) = records(caplog, RESULTS_DATASET)
    assert getattr(write, "trace.id") == [t.trace_id for t in traces]


def test_the_batch_record_has_its_own_span_and_its_requests_traces_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "inferq.events")
    traces = tuple(TraceContext.new() for _ in range(TRACE_IDS_MAX + 10))
    stats = BatchStats("echo-384", "b1", len(traces), 10, 12, 1.5, 0, "cpu", "v1", "00f067aa0ba902b7", traces)
    Telemetry(Settings(log_ship=False)).batch_done(stats)
    (rec,) = records(caplog, BATCH_DATASET)
    assert getattr(rec, "span.id") == "00f067aa0ba902b7"
    assert getattr(rec, "trace.id") == [t.trace_id for t in traces[:TRACE_IDS_MAX]]


def test_the_index_template_maps_the_ecs_trace_fields() -> None:
    assert PROPERTIES["trace"]["properties"]["id"]["type"] == "keyword"
    assert PROPERTIES["span"]["properties"]["id"]["type"] == "keyword"
