"""The Grafana dashboard as code; ``python -m ops.metrics.grafana`` writes ``ops/assets/grafana``.

Every query reads a metric of :mod:`workers.telemetry.metrics` or of the exporter; the tests check
each expression's metric and label names against the instruments (tests/unit/ops/test_dashboards.py)
and against what the local stack's exporter serves after real traffic, and have the stack's
Prometheus parse every expression (tests/integration/test_dashboards.py).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

JSON_PATH = files("ops") / "assets" / "grafana" / "inferq.json"


def _q(expr: str, legend: str) -> dict[str, str]:
    return {"expr": expr, "legendFormat": legend}


def _quantile(q: float, metric: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[5m])))"


# (title, unit, queries)
PANELS: list[tuple[str, str, list[dict[str, str]]]] = [
    (
        "Results per second, by status",
        "reqps",
        [_q("sum by (status) (rate(inferq_results_total[1m]))", "{{status}}")],
    ),
    (
        "Latency publish → result",
        "s",
        [
            _q(_quantile(0.5, "inferq_request_latency_seconds"), "p50"),
            _q(_quantile(0.95, "inferq_request_latency_seconds"), "p95"),
            _q(_quantile(0.99, "inferq_request_latency_seconds"), "p99"),
        ],
    ),
    (
        "Kafka consumer lag",
        "short",
        [_q("sum by (topic, group) (inferq_kafka_consumer_lag)", "{{group}} {{topic}}")],
    ),
    ("Celery queue depth", "short", [_q("inferq_celery_queue_depth", "{{queue}}")]),
    ("Requests in flight", "short", [_q("inferq_requests_in_flight", "in flight")]),
    ("Workers up, by model", "short", [_q("inferq_workers_up", "{{model}}")]),
    (
        "Batch size (texts per forward pass)",
        "short",
        [
            _q(
                "sum by (model) (rate(inferq_batch_size_sum[5m]))"
                " / sum by (model) (rate(inferq_batch_size_count[5m]))",
                "mean {{model}}",
            ),
            _q(_quantile(0.9, "inferq_batch_size", "model"), "p90 {{model}}"),
        ],
    ),
    (
        "Padding waste",
        "percentunit",
        [
            _q(
                "sum by (model) (rate(inferq_batch_padding_waste_ratio_sum[5m]))"
                " / sum by (model) (rate(inferq_batch_padding_waste_ratio_count[5m]))",
                "{{model}}",
            )
        ],
    ),
    (
        "Queue wait and compute (p95)",
        "s",
        [
            _q(_quantile(0.95, "inferq_queue_wait_seconds", "model"), "queue wait {{model}}"),
            _q(_quantile(0.95, "inferq_batch_compute_seconds", "model"), "compute {{model}}"),
        ],
    ),
    ("Tokens per batch (p50)", "short", [_q(_quantile(0.5, "inferq_batch_tokens", "model"), "{{model}}")]),
    (
        "Generation: tokens per second, sequences per decode step",
        "short",
        [
            _q("sum by (model) (rate(inferq_generated_tokens_total[1m]))", "tokens/s {{model}}"),
            _q(
                "sum by (model) (rate(inferq_decode_batch_sequences_sum[5m]))"
                " / sum by (model) (rate(inferq_decode_batch_sequences_count[5m]))",
                "sequences/step {{model}}",
            ),
        ],
    ),
    (
        "Generation: time to first token",
        "s",
        [
            _q(_quantile(0.5, "inferq_time_to_first_token_seconds", "model"), "p50 {{model}}"),
            _q(_quantile(0.95, "inferq_time_to_first_token_seconds", "model"), "p95 {{model}}"),
        ],
    ),
    (
        "Result cache: share of inputs answered from it",
        "percentunit",
        [
            _q(
                "sum by (model) (rate(inferq_cache_hits_total[5m])) / (sum by (model) "
                "(rate(inferq_cache_hits_total[5m])) + sum by (model) (rate(inferq_cache_misses_total[5m])))",
                "hit ratio {{model}}",
            ),
            _q("inferq_cache_used_bytes / inferq_cache_max_bytes", "memory used of its bound"),
        ],
    ),
    (
        "Dead letters per second, by reason",
        "reqps",
        [_q("sum by (code) (rate(inferq_dead_letters_total[5m]))", "{{code}}")],
    ),
    (
        "Log shipping: spool on disk and dropped records",
        "bytes",
        [
            _q("inferq_log_spool_bytes", "spool bytes"),
            _q("sum(increase(inferq_log_records_dropped_total[5m]))", "dropped / 5m"),
        ],
    ),
    # -- model versions side by side (issue 20): label ``version`` on results and latency ---------
    (
        "Versions: results per second, by model version",
        "reqps",
        [_q("sum by (model, version) (rate(inferq_results_total[1m]))", "{{model}} {{version}}")],
    ),
    (
        "Versions: error rate (results not done), by model version",
        "percentunit",
        [
            _q(
                'sum by (model, version) (rate(inferq_results_total{status!="done"}[5m]))'
                " / sum by (model, version) (rate(inferq_results_total[5m]))",
                "{{model}} {{version}}",
            )
        ],
    ),
    (
        "Versions: latency publish → result p50 / p99, by model version",
        "s",
        [
            _q(
                _quantile(0.5, "inferq_request_latency_seconds", "model, version"),
                "p50 {{model}} {{version}}",
            ),
            _q(
                _quantile(0.99, "inferq_request_latency_seconds", "model, version"),
                "p99 {{model}} {{version}}",
            ),
        ],
    ),
    # -- deliveries of results to reply topics and webhooks (issue 19) ---------------------------
    (
        "Deliveries per second: sent, retried, failed, by sink",
        "reqps",
        [_q("sum by (sink, outcome) (rate(inferq_deliveries_total[5m]))", "{{sink}} {{outcome}}")],
    ),
    (
        "Undeliverable results (given up after retrying), by sink",
        "short",
        [_q('sum by (sink) (increase(inferq_deliveries_total{outcome="failed"}[5m]))', "{{sink}} / 5m")],
    ),
    (
        "GPU",
        "percentunit",
        [
            _q("inferq_gpu_utilization_ratio", "busy gpu {{gpu}}"),
            _q("inferq_gpu_memory_used_bytes / inferq_gpu_memory_total_bytes", "memory gpu {{gpu}}"),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels = []
    for n, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": n + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": 12 * (n % 2), "y": 8 * (n // 2), "w": 12, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{**q, "refId": chr(ord("A") + i)} for i, q in enumerate(queries)],
            }
        )
    return {
        "uid": "inferq-overview",
        "title": "inferq",
        "tags": ["inferq"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "panels": panels,
    }


def main() -> None:
    path = Path(str(JSON_PATH))
    path.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {path} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
