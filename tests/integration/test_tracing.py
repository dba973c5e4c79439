"""W3C trace context end to end on the real stack: a foreign producer's ``traceparent`` header (or the
HTTP API's) becomes the result's ``trace_id``, and the request's shipped ECS records are found in the
log store by ``trace.id``, its batch's record among them."""

from __future__ import annotations

from typing import Any, cast

import httpx
from elasticsearch import Elasticsearch
from kafka import KafkaProducer
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from producers.client import InferqClient
from schemas import results, tracing
from schemas.connections import kafka_options
from schemas.messages import EmbeddingOutput, InferenceRequest, ResultStatus, Task, Timings, now_ms
from schemas.naming import log_index, requests_topic
from schemas.observer import INTAKE_SPAN, PUBLISH_SPAN, RequestSpan
from schemas.settings import Settings
from schemas.tracing import TraceContext
from schemas.work import WorkItem
from tests.stack import eventually
from workers.core.batcher import BatchPolicy
from workers.core.engine import Engine
from workers.store.store import ResultStore, request_digest
from workers.telemetry.observe import Telemetry
from workers.telemetry.otel import BATCH_SPAN, QUEUE_SPAN, RESULT_SPAN, SpanExport

MODEL = "all-MiniLM-L6-v2"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def search(es: Elasticsearch, settings: Settings, query: dict[str, Any]) -> list[dict[str, Any]]:
    es.indices.refresh(index=log_index(settings))
    hits = es.search(index=log_index(settings), query=query, size=200)["hits"]["hits"]
    return [h["_source"] for h in hits]


def test_a_foreign_records_traceparent_is_the_results_trace_and_finds_its_records(
    client: InferqClient, settings: Settings
) -> None:
    traced, bare, hostile = (
        InferenceRequest(task="embed", model=MODEL, inputs=f"trace me {i}", tenant="tracing")
        for i in range(3)
    )
    raw = KafkaProducer(**kafka_options(settings), acks="all")  # as any Kafka client would publish
    try:
        topic = requests_topic(settings)
        headers = [("traceparent", f"00-{TRACE}-{PARENT}-01".encode()), ("tracestate", b"rojo=1")]
        raw.send(topic, key=traced.request_id.encode(), value=traced.wire_json().encode(), headers=headers)
        raw.send(topic, key=bare.request_id.encode(), value=bare.wire_json().encode())
        upper = [("traceparent", f"00-{TRACE.upper()}-{PARENT}-01".encode())]  # invalid: ignored
        raw.send(topic, key=hostile.request_id.encode(), value=hostile.wire_json().encode(), headers=upper)
        raw.flush(10)
    finally:
        raw.close()
    ids = [traced.request_id, bare.request_id, hostile.request_id]
    results = client.wait_all(ids, timeout_s=60, tenant="tracing")
    assert all(r.status is ResultStatus.DONE for r in results.values())
    assert results[traced.request_id].trace_id == TRACE
    # without a (valid) header the intake started a trace of its own
    for rid in ids[1:]:
        assert tracing.valid_trace_id(results[rid].trace_id) and results[rid].trace_id != TRACE

    es = Elasticsearch(settings.elasticsearch_url)

    def found() -> list[dict[str, Any]]:
        docs = search(es, settings, {"term": {"trace.id": TRACE}})
        kinds = {d["event"]["dataset"] for d in docs}
        return docs if {"inferq.request", "inferq.batch"} <= kinds else []

    docs = cast(
        list[dict[str, Any]], eventually(found, 30, "the request's records in the log store by trace.id")
    )
    (record,) = [d for d in docs if d["event"]["dataset"] == "inferq.request"]
    assert record["inferq"]["request_id"] == traced.request_id and record["trace"]["id"] == TRACE
    span = record["span"]["id"]  # the intake's span for the request: a child of the producer's
    assert tracing.valid_span_id(span) and span != PARENT
    (batch,) = [d for d in docs if d["event"]["dataset"] == "inferq.batch"]
    assert batch["inferq"]["batch_id"] == record["inferq"]["batch_id"]
    assert tracing.valid_span_id(batch["span"]["id"]) and batch["span"]["id"] != span
    # the bare request's record is found by its own, intake-started trace id
    bare_docs: Any = eventually(
        lambda: search(es, settings, {"term": {"trace.id": results[bare.request_id].trace_id}}),
        30,
        "the bare request's records",
    )
    assert bare.request_id in {d.get("inferq", {}).get("request_id") for d in bare_docs}


def test_the_http_api_continues_the_callers_trace(client: InferqClient, settings: Settings) -> None:
    trace = tracing.new_trace_id()
    body = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "over http"}
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as api:
        answer = api.post("/v1/requests", json=body, headers={"traceparent": f"00-{trace}-{PARENT}-01"})
        assert answer.status_code == 202, answer.text
        rid = answer.json()["request_id"]
        queued = api.get(f"/v1/results/{rid}").json()
        assert queued["trace_id"] == trace  # the queued record already names it
        hostile = api.post("/v1/requests", json=body, headers={"traceparent": "x" * 10_000})
        assert hostile.status_code == 202, hostile.text  # never an error: a new trace instead
    done = client.wait(rid, timeout_s=60)
    assert done.status is ResultStatus.DONE and done.trace_id == trace
    other = client.wait(hostile.json()["request_id"], timeout_s=60)
    assert tracing.valid_trace_id(other.trace_id) and other.trace_id != trace


def test_the_client_sets_a_traceparent_per_request_or_continues_the_callers(client: InferqClient) -> None:
    own = client.submit("embed", MODEL, "mine", traceparent=f"00-{TRACE}-{PARENT}-01")
    fresh = [client.submit("embed", MODEL, f"fresh {i}") for i in range(2)]
    results = client.wait_all([own, *fresh], timeout_s=60)
    assert results[own].trace_id == TRACE
    traces = {results[rid].trace_id for rid in fresh}
    assert len(traces) == 2 and all(tracing.valid_trace_id(t) for t in traces) and TRACE not in traces


class _Runner:
    """A stand-in model (the spans, not the model, are under test): one float per text."""

    name, task, version, device = "trace-fake", Task.EMBED, "fake@1", "cpu"

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]

    def forward(self, batch: list[list[int]]) -> list[list[float]]:
        return [[float(len(ids))] for ids in batch]

    def output(self, row: list[float], request: InferenceRequest) -> EmbeddingOutput:
        return EmbeddingOutput(embedding=row)


def test_spans_form_one_trace_per_request_with_the_batch_linked_to_each(stack, settings: Settings) -> None:
    """The worker-side batch code in process over the stack's Redis, spans to an in-memory exporter:
    publish -> intake -> queue wait and result write form each request's trace; the forward pass
    that served them all is one span, linked to every request's span."""
    exporter = InMemorySpanExporter()
    spans = SpanExport(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(settings.model_copy(update={"log_ship": False}), spans=spans)
    assert telemetry.tracing and not Telemetry(settings.model_copy(update={"log_ship": False})).tracing
    store = ResultStore.from_settings(settings, telemetry)
    published = [TraceContext.new() for _ in range(3)]  # each producer's publish span
    reqs = [InferenceRequest(task="embed", model="trace-fake", inputs=f"t{i}" * (i + 1)) for i in range(3)]
    start = now_ms()
    telemetry.request_spans(
        [
            RequestSpan(PUBLISH_SPAN, p, start - 5, start - 4, r.request_id)
            for p, r in zip(published, reqs, strict=True)
        ]
    )
    # the intake: each record's header read, its own span opened, admitted, handed off
    items = []
    for p, r in zip(published, reqs, strict=True):
        trace = tracing.received(tracing.from_record_headers(p.headers()).parent)
        t = {"received_ms": start - 3, "queued_ms": start - 2}
        store.admit([(request_digest(r), results.queued_result(r, t, trace))])
        items.append(WorkItem(request=r, timings=Timings(**t), trace=trace))
    telemetry.request_spans(
        [
            RequestSpan(INTAKE_SPAN, i.trace, start - 3, start - 2, i.request.request_id)
            for i in items
            if i.trace
        ]
    )
    engine = Engine(cast(Any, _Runner()), store, BatchPolicy(64, 10_000, 50.0), observer=telemetry)
    try:
        jobs = engine.submit(items)
        assert all(j.done.wait(30) for j in jobs)
    finally:
        engine.close()
    for r, p in zip(reqs, published, strict=True):
        stored = store.get(r.request_id)
        assert stored is not None and stored.status is ResultStatus.DONE and stored.trace_id == p.trace_id

    finished = exporter.get_finished_spans()
    batches = [s for s in finished if s.name == BATCH_SPAN]
    assert len(batches) == 1, [s.name for s in finished]  # one forward pass served all three
    (batch,) = batches
    linked = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    for p, item in zip(published, items, strict=True):
        assert item.trace is not None
        tid, sid = int(p.trace_id, 16), int(item.trace.span_id, 16)
        assert (tid, sid) in linked  # the batch links to this request's span
        mine = {s.name: s for s in finished if s.context.trace_id == tid}
        assert set(mine) == {PUBLISH_SPAN, INTAKE_SPAN, QUEUE_SPAN, RESULT_SPAN}  # one trace per request
        assert mine[PUBLISH_SPAN].parent is None and mine[PUBLISH_SPAN].context.span_id == int(p.span_id, 16)
        intake = mine[INTAKE_SPAN].context
        assert intake is not None and intake.span_id == sid
        above = mine[INTAKE_SPAN].parent
        assert above is not None and above.span_id == int(p.span_id, 16)
        for child in (QUEUE_SPAN, RESULT_SPAN):
            parent = mine[child].parent
            assert parent is not None and parent.span_id == sid
    assert batch.context.trace_id not in {int(p.trace_id, 16) for p in published}  # its own root
    assert batch.parent is None and batch.context.span_id != 0
    spans.shutdown()
