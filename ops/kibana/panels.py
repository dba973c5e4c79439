"""The panels of the Kibana dashboard: what each visualisation queries and aggregates.

:mod:`ops.kibana.dashboards` turns them into saved objects. Each panel is one aggregation-based
visualisation (``visState``) over the ``inferq-logs*`` data view: a KQL query, pinned filters and
the aggregations, in Kibana's own form, so they import into any Kibana 7.10+/8.x and are run as
Kibana runs them in tests/integration/test_dashboards.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

REQUESTS = 'event.dataset : "inferq.request"'
BATCHES = 'event.dataset : "inferq.batch"'
DEAD = 'event.dataset : "inferq.deadletter"'
DELIVERIES = 'event.dataset : "inferq.delivery"'

# one visState aggregation: schema metric / segment (x axis) / group (series) / split / bucket (table rows)
Agg = dict[str, Any]


@dataclass(frozen=True)
class Panel:
    """One visualisation: its KQL query, Kibana filters (``field: value`` phrases; ``negate`` to
    exclude) and aggregations; ``params`` are the visualisation's own display options."""

    vid: str
    title: str
    kind: str
    query: str
    aggs: list[Agg]
    filters: tuple[tuple[str, str, bool], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


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
    params: dict[str, Any] = {"field": field, "size": size, "order": "desc", "orderBy": "1"}
    if schema == "split":
        params["row"] = True  # one chart per value, stacked
    return {"id": i, "enabled": True, "type": "terms", "schema": schema, "params": params}


def _hist(i: str, field: str, interval: float) -> Agg:
    # ``min_doc_count`` is Kibana's "show empty buckets" switch here (a boolean), unlike date_histogram's
    return {
        "id": i,
        "enabled": True,
        "type": "histogram",
        "schema": "segment",
        "params": {"field": field, "interval": interval, "min_doc_count": False},
    }


# a bar chart whose bars each add up to 100 %: the share of each series per x value. Kibana fills a
# visualisation's missing params from its type's defaults one key deep, so the axis is given whole.
PERCENTAGE_BARS = {
    "valueAxes": [
        {
            "id": "ValueAxis-1",
            "name": "PercentageAxis-1",
            "type": "value",
            "position": "left",
            "show": True,
            "style": {},
            "scale": {"type": "linear", "mode": "percentage"},
            "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
            "title": {"text": "Share of results"},
        }
    ]
}

PANELS: list[Panel] = [
    Panel(
        "inferq-throughput",
        "Throughput: requests finished, by status",
        "histogram",
        REQUESTS,
        [_metric("1", "count"), _time("2"), _terms("3", "inferq.status")],
    ),
    Panel(
        "inferq-latency-percentiles",
        "Latency publish → result (ms): p50 / p95 / p99",
        "line",
        REQUESTS,
        [_metric("1", "percentiles", "inferq.duration_ms.total", percents=[50, 95, 99]), _time("2")],
    ),
    Panel(
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
    Panel(
        "inferq-latency-distribution",
        "Latency distribution (ms, 50 ms buckets)",
        "histogram",
        REQUESTS,
        [_metric("1", "count"), _hist("2", "inferq.duration_ms.total", 50)],
    ),
    Panel(
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
    Panel(
        "inferq-padding-waste",
        "Padding waste: mean share of padded tokens per batch",
        "line",
        BATCHES,
        [_metric("1", "avg", "inferq.batch.padding_waste"), _time("2")],
    ),
    Panel(
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
    Panel(
        "inferq-errors",
        "Errors by type (failed, expired, cancelled results)",
        "histogram",
        f'{REQUESTS} and event.outcome : "failure"',
        [_metric("1", "count"), _time("2"), _terms("3", "inferq.error_code")],
    ),
    Panel(
        "inferq-dead-letters",
        "Dead letters by reason",
        "table",
        DEAD,
        [_metric("1", "count"), _terms("2", "inferq.error_code", schema="bucket")],
    ),
    Panel(
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
    Panel(
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
    # -- model versions side by side (issue 20): judge a canary against the current version -------
    Panel(
        "inferq-version-throughput",
        "Versions: requests finished per model version",
        "line",
        REQUESTS,
        [_metric("1", "count"), _time("2"), _terms("3", "inferq.model_version")],
    ),
    Panel(
        "inferq-version-latency",
        "Versions side by side: requests, latency p50 / p95 / p99 and mean (ms)",
        "table",
        REQUESTS,
        [
            _metric("1", "count"),
            _metric("2", "percentiles", "inferq.duration_ms.total", percents=[50, 95, 99]),
            _metric("3", "avg", "inferq.duration_ms.total"),
            _terms("4", "inferq.model", schema="bucket"),
            _terms("5", "inferq.model_version", schema="bucket"),
        ],
    ),
    Panel(
        "inferq-version-latency-mean",
        "Versions: mean latency publish → result (ms) per model version",
        "line",
        REQUESTS,
        [_metric("1", "avg", "inferq.duration_ms.total"), _time("2"), _terms("3", "inferq.model_version")],
    ),
    Panel(
        "inferq-version-outcomes",
        "Versions: share of results by status (the error rate is each bar's non-done part)",
        "histogram",
        REQUESTS,
        [
            _metric("1", "count"),
            _terms("2", "inferq.model_version", schema="segment"),
            _terms("3", "inferq.status"),
        ],
        params=PERCENTAGE_BARS,
    ),
    # -- deliveries of results to reply topics and webhooks (issue 19) ---------------------------
    Panel(
        "inferq-deliveries",
        "Deliveries: sent, retried and failed, per sink (kafka, webhook)",
        "histogram",
        DELIVERIES,
        [
            _metric("1", "count"),
            _terms("2", "inferq.delivery.sink", schema="split"),
            _time("3"),
            _terms("4", "inferq.delivery.outcome"),
        ],
    ),
    Panel(
        "inferq-delivery-failures",
        "Undeliverable results by sink and reason",
        "table",
        DELIVERIES,
        [
            _metric("1", "count"),
            _terms("2", "inferq.delivery.sink", schema="bucket"),
            _terms("3", "inferq.delivery.reason", schema="bucket", size=20),
        ],
        filters=(("inferq.delivery.outcome", "failed", False),),
    ),
]

# panels whose aggregation the local ES-API server cannot run, and why: checked on osmem-server
NOT_LOCAL = {
    "inferq-latency-percentiles": "the local ES-API server has no percentiles aggregation",
    "inferq-version-latency": "the local ES-API server has no percentiles aggregation",
}


def panel_fields(panel: Panel) -> set[str]:
    """Every field a panel reads: its aggregations', its filters' and its query's."""
    used = {a["params"]["field"] for a in panel.aggs if a["params"].get("field")}
    return used | {key for key, _, _ in panel.filters} | set(re.findall(r"([\w@.]+) :", panel.query))
