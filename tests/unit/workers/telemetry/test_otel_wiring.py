"""Span export is wired by Telemetry only when INFERQ_OTEL_ENABLED: off, OpenTelemetry is not even
imported (the extra may be absent) and the pipeline sees ``tracing`` False (builds no span objects)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas.messages import InferenceRequest, ResultStatus
from schemas.observer import INTAKE_SPAN, BatchStats, Observers, RequestSpan
from schemas.results import result
from schemas.settings import Settings
from schemas.tracing import TraceContext
from workers.telemetry import otel
from workers.telemetry.observe import Telemetry

ROOT = Path(__file__).resolve().parents[4]
OFF = """
import json, sys
from schemas.settings import Settings
from workers.telemetry.observe import Telemetry
t = Telemetry(Settings(log_ship=False))
print(json.dumps([t.tracing, any(m.startswith("opentelemetry") for m in sys.modules)]))
"""


def test_off_nothing_of_opentelemetry_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")} | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", OFF], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [False, False]


def test_on_the_settings_exporter_is_built() -> None:
    assert otel.from_settings(Settings(otel_enabled=False)) is None
    export = otel.from_settings(Settings(otel_enabled=True, otel_exporter="console"))
    assert isinstance(export, otel.SpanExport) and export.tracing
    export.shutdown()
    assert Observers([Telemetry(Settings(log_ship=False), spans=export)]).tracing
    assert not Observers([Telemetry(Settings(log_ship=False))]).tracing


def test_spans_carry_the_pipelines_own_ids() -> None:
    exporter = InMemorySpanExporter()
    export = otel.SpanExport(SimpleSpanProcessor(exporter))
    root = TraceContext.new()  # a request that came without a traceparent: the intake's span is a root
    export.request_spans([RequestSpan(INTAKE_SPAN, root, 1.0, 2.0, "r" * 16)])
    req = InferenceRequest(task="embed", model="echo-384", inputs="x")
    done = result(
        req, ResultStatus.DONE, {"queued_ms": 2.0, "batch_start_ms": 3.0, "done_ms": 4.0}, trace=root
    )
    export.results_written([done])
    stats = BatchStats("echo-384", "b1", 1, 1, 1, 1.0, 0, "cpu", "v1", "00f067aa0ba902b7", (root,), 3.0)
    export.batch_done(stats)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {INTAKE_SPAN, otel.QUEUE_SPAN, otel.RESULT_SPAN, otel.BATCH_SPAN}
    intake = spans[INTAKE_SPAN]
    assert intake.parent is None and intake.context is not None
    assert (intake.context.trace_id, intake.context.span_id) == (
        int(root.trace_id, 16),
        int(root.span_id, 16),
    )
    assert intake.start_time == 1_000_000 and intake.end_time == 2_000_000
    for name in (otel.QUEUE_SPAN, otel.RESULT_SPAN):
        parent = spans[name].parent
        assert parent is not None and parent.span_id == int(root.span_id, 16)
    batch = spans[otel.BATCH_SPAN]
    assert batch.context is not None and batch.context.span_id == int("00f067aa0ba902b7", 16)
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (int(root.trace_id, 16), int(root.span_id, 16))
    ]
    export.shutdown()
