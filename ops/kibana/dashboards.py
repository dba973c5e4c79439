"""The Kibana dashboard as code: saved objects built here, written to ``ops/assets/kibana``.

``python -m ops.kibana.dashboards`` regenerates ``inferq.ndjson``; a test fails when the file and
this code differ, when a panel uses a field the index template does not map, or when one of its
aggregations does not run against the local ES-API server (percentiles excepted: that server has
no percentiles aggregation, so those panels are named in :data:`NOT_LOCAL`).

Visualisations are the aggregation-based kind (``visState``), which every Kibana 7.10+/8.x
imports; each is one Elasticsearch aggregation, so :func:`es_aggs` can run it anywhere.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

DATA_VIEW_ID = "inferq-logs"
DATA_VIEW_TITLE = "inferq-logs*"
DASHBOARD_ID = "inferq-overview"
NDJSON = files("ops") / "assets" / "kibana" / "inferq.ndjson"

REQUESTS = 'event.dataset : "inferq.request"'
BATCHES = 'event.dataset : "inferq.batch"'
DEAD = 'event.dataset : "inferq.deadletter"'

# (id, title, vis type, query, aggs) — aggs in visState form: schema metric / bucket / group / split
Agg = dict[str, Any]


def _metric(i: str, kind: str, field: str | None = None, **params: Any) -> Agg:
    p = {"field": field, **params} if field else dict(params)
    return {"id": i, "enabled": True, "type": kind, "schema": "metric", "params": p}


def _time(i: str, interval: str = "auto") -> Agg:
    return {
        "id": i,
        "enabled": True,
        "type": "date_histogram",
        "schema": "segment",
        "params": {"field": "@timestamp", "interval": interval, "min_doc_count": 1},
    }


def _terms(i: str, field: str, schema: str = "group", size: int = 10) -> Agg:
    return {
        "id": i,
        "enabled": True,
        "type": "terms",
        "schema": schema,
        "params": {"field": field, "size": size, "order": "desc", "orderBy": "1"},
    }


def _hist(i: str, field: str, interval: float) -> Agg:
    return {
        "id": i,
        "enabled": True,
        "type": "histogram",
        "schema": "segment",
        "params": {"field": field, "interval": interval, "min_doc_count": 1},
    }


PANELS: list[tuple[str, str, str, str, list[Agg]]] = [
    (
        "inferq-throughput",
        "Throughput: requests finished, by status",
        "histogram",
        REQUESTS,
        [_metric("1", "count"), _time("2"), _terms("3", "inferq.status")],
    ),
    (
        "inferq-latency-percentiles",
        "Latency publish → result (ms): p50 / p95 / p99",
        "line",
        REQUESTS,
        [_metric("1", "percentiles", "inferq.duration_ms.total", percents=[50, 95, 99]), _time("2")],
    ),
    (
        "inferq-latency-stages",
        "Where the time goes: mean ms per stage",
        "line",
        REQUESTS,
        [
            _metric("1", "avg", "inferq.duration_ms.kafka"),
            _metric("2", "avg", "inferq.duration_ms.intake"),
            _metric("3", "avg", "inferq.duration_ms.queue"),
            _metric("4", "avg", "inferq.duration_ms.compute"),
            _time("5"),
        ],
    ),
    (
        "inferq-latency-distribution",
        "Latency distribution (ms, 50 ms buckets)",
        "histogram",
        REQUESTS,
        [_metric("1", "count"), _hist("2", "inferq.duration_ms.total", 50)],
    ),
    (
        "inferq-batch-size",
        "Batch size: mean and largest texts per forward pass",
        "line",
        BATCHES,
        [
            _metric("1", "avg", "inferq.batch.size"),
            _metric("2", "max", "inferq.batch.size"),
            _time("3"),
        ],
    ),
    (
        "inferq-padding-waste",
        "Padding waste: mean share of padded tokens per batch",
        "line",
        BATCHES,
        [_metric("1", "avg", "inferq.batch.padding_waste"), _time("2")],
    ),
    (
        "inferq-batch-compute",
        "Forward pass: mean ms and tokens per batch, by model",
        "line",
        BATCHES,
        [
            _metric("1", "avg", "inferq.batch.compute_ms"),
            _metric("2", "avg", "inferq.batch.tokens"),
            _time("3"),
            _terms("4", "inferq.model"),
        ],
    ),
    (
        "inferq-errors",
        "Errors by type (failed, expired, cancelled results)",
        "histogram",
        f'{REQUESTS} and event.outcome : "failure"',
        [_metric("1", "count"), _time("2"), _terms("3", "inferq.error_code")],
    ),
    (
        "inferq-dead-letters",
        "Dead letters by reason",
        "table",
        DEAD,
        [_metric("1", "count"), _terms("2", "inferq.error_code", schema="bucket")],
    ),
    (
        "inferq-per-model",
        "Per model: requests, mean latency, failures",
        "table",
        REQUESTS,
        [
            _metric("1", "count"),
            _metric("2", "avg", "inferq.duration_ms.total"),
            _metric("3", "max", "inferq.duration_ms.total"),
            _terms("4", "inferq.model", schema="bucket"),
            _terms("5", "inferq.status", schema="bucket"),
        ],
    ),
    (
        "inferq-per-tenant",
        "Per tenant: requests and mean latency",
        "table",
        REQUESTS,
        [
            _metric("1", "count"),
            _metric("2", "avg", "inferq.duration_ms.total"),
            _terms("3", "inferq.tenant", schema="bucket", size=20),
        ],
    ),
]

# panels whose aggregation the local ES-API server cannot run, and why
NOT_LOCAL = {"inferq-latency-percentiles": "the local ES-API server has no percentiles aggregation"}


def _visualization(vid: str, title: str, kind: str, query: str, aggs: list[Agg]) -> dict[str, Any]:
    vis_state = {
        "title": title,
        "type": kind,
        "aggs": aggs,
        "params": {"addLegend": True, "addTooltip": True},
    }
    search = {
        "query": {"language": "kuery", "query": query},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return {
        "id": vid,
        "type": "visualization",
        "attributes": {
            "title": title,
            "visState": json.dumps(vis_state),
            "uiStateJSON": "{}",
            "description": "",
            "version": 1,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)},
        },
        "references": [
            {
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
                "type": "index-pattern",
                "id": DATA_VIEW_ID,
            }
        ],
    }


def saved_objects() -> list[dict[str, Any]]:
    """Data view, one visualisation per panel, and the dashboard laying them out two per row."""
    objects: list[dict[str, Any]] = [
        {
            "id": DATA_VIEW_ID,
            "type": "index-pattern",
            "attributes": {"title": DATA_VIEW_TITLE, "timeFieldName": "@timestamp"},
            "references": [],
        }
    ]
    panels, refs = [], []
    for n, (vid, title, kind, query, aggs) in enumerate(PANELS):
        objects.append(_visualization(vid, title, kind, query, aggs))
        ref = f"panel_{n}"
        panels.append(
            {
                "panelIndex": str(n),
                "gridData": {"x": 24 * (n % 2), "y": 15 * (n // 2), "w": 24, "h": 15, "i": str(n)},
                "embeddableConfig": {},
                "panelRefName": ref,
                "version": "8.15.0",
            }
        )
        refs.append({"name": ref, "type": "visualization", "id": vid})
    objects.append(
        {
            "id": DASHBOARD_ID,
            "type": "dashboard",
            "attributes": {
                "title": "inferq",
                "description": "Throughput, latency, batching, errors and dead letters of inferq",
                "panelsJSON": json.dumps(panels),
                "optionsJSON": json.dumps({"useMargins": True, "hidePanelTitles": False}),
                "timeRestore": True,
                "timeFrom": "now-1h",
                "timeTo": "now",
                "kibanaSavedObjectMeta": {
                    "searchSourceJSON": json.dumps(
                        {"query": {"language": "kuery", "query": ""}, "filter": []}
                    )
                },
            },
            "references": refs,
        }
    )
    return objects


def render() -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in saved_objects())


def vis_fields(aggs: list[Agg]) -> set[str]:
    return {a["params"]["field"] for a in aggs if a["params"].get("field")}


def es_aggs(aggs: list[Agg]) -> dict[str, Any]:
    """The Elasticsearch aggregation a visState stands for: buckets nest in order, metrics inside."""
    metrics: dict[str, Any] = {}
    for a in aggs:
        if a["schema"] != "metric" or a["type"] == "count":
            continue
        p = a["params"]
        body = {"field": p["field"]}
        if a["type"] == "percentiles":
            body["percents"] = p["percents"]
        metrics[a["id"]] = {a["type"]: body}
    tree: dict[str, Any] = metrics
    for a in reversed([a for a in aggs if a["schema"] != "metric"]):
        p = a["params"]
        if a["type"] == "date_histogram":
            inner: dict[str, Any] = {"field": p["field"], "fixed_interval": "1m", "min_doc_count": 1}
        elif a["type"] == "histogram":
            inner = {"field": p["field"], "interval": p["interval"], "min_doc_count": 1}
        elif a["type"] == "terms":
            inner = {"field": p["field"], "size": p["size"]}
        else:
            raise ValueError(f"unsupported bucket aggregation {a['type']}")
        node: dict[str, Any] = {a["type"]: inner}
        if tree:
            node["aggs"] = tree
        tree = {a["id"]: node}
    return tree


def main() -> None:
    path = Path(str(NDJSON))
    path.write_text(render())
    print(f"wrote {path} ({len(saved_objects())} saved objects)")


if __name__ == "__main__":
    main()
