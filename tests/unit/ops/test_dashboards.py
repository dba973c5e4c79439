"""The Kibana, Grafana and Prometheus assets: generated from code, consistent with what we emit."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ops.kibana import dashboards
from ops.kibana.importer import import_dashboards
from ops.metrics import grafana
from ops.metrics.promql import references
from schemas.errors import StackError
from workers.telemetry import metrics as instruments
from workers.telemetry.template import field_paths

ASSETS = Path(__file__).resolve().parents[3] / "ops" / "assets"
# what the exporter reads live at scrape time (ops/metrics/exporter.py), with its label names
EXPORTER_ONLY: dict[str, frozenset[str]] = {
    "inferq_kafka_consumer_lag": frozenset({"topic", "partition", "group"}),
    "inferq_celery_queue_depth": frozenset({"queue"}),
    "inferq_requests_in_flight": frozenset(),
    "inferq_workers_up": frozenset({"model"}),
    "inferq_log_spool_bytes": frozenset(),
    "inferq_gpu_utilization_ratio": frozenset({"gpu"}),
    "inferq_gpu_memory_used_bytes": frozenset({"gpu"}),
    "inferq_gpu_memory_total_bytes": frozenset({"gpu"}),
    "inferq_exporter_errors_total": frozenset({"source"}),
    # workers.telemetry.liveness, from the intakes' poll stamps
    "inferq_intake_up": frozenset({"replica"}),
    "inferq_intake_last_poll_age_seconds": frozenset({"replica"}),
    # the result cache's own Redis, read at scrape time
    "inferq_cache_used_bytes": frozenset(),
    "inferq_cache_max_bytes": frozenset(),
    "inferq_cache_evicted_keys": frozenset(),
}
# Metrics and labels the dashboard reads that other work of issues 19 and 20 adds: allowed absent
# only while no instrument in workers.telemetry.metrics declares them; once one does, they are
# checked like any other (so after those branches merge these entries are inert: delete them).
AWAITED_METRICS = {"inferq_deliveries_total": "the delivery service's counter (issue 19)"}
AWAITED_LABELS = {
    ("inferq_results_total", "version"): "per-version metrics (issue 20)",
    ("inferq_request_latency_seconds_bucket", "version"): "per-version metrics (issue 20)",
}


def declared() -> dict[str, frozenset[str]]:
    """Every sample name the pipeline can serve (``x_total``, ``x_bucket``, ...) and its labels."""
    out = dict(EXPORTER_ONLY)
    for metric in vars(instruments).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = frozenset(metric._labelnames)
        for family in metric.describe():
            if family.type == "counter":
                out[family.name + "_total"] = labels
            elif family.type == "histogram":
                out[family.name + "_bucket"] = labels | {"le"}
                out |= {family.name + s: labels for s in ("_sum", "_count")}
            else:
                out[family.name] = labels
    return out


def unknown_references(
    expr: str, legend: str, known: dict[str, frozenset[str]], *, labels: bool = True
) -> list[str]:
    """Metric names ``known`` lacks, and (``labels``) label names one of the expression's metrics
    lacks (a panel's expression groups one metric, or metrics of the same labels; an alert joining
    different metrics is checked by name only); :data:`AWAITED_METRICS` and :data:`AWAITED_LABELS`
    pass while nothing declares them."""
    refs = references(expr, legend)
    decl = declared()
    problems = []
    for m in sorted(refs.metrics):
        if m not in known:
            if not (m in AWAITED_METRICS and m not in decl):
                problems.append(f"metric {m}")
            continue
        for label in sorted(refs.labels - known[m] if labels else ()):
            if not ((m, label) in AWAITED_LABELS and label not in decl.get(m, frozenset())):
                problems.append(f"label {label} of {m}")
    return problems


def test_kibana_ndjson_is_what_the_code_generates_and_parses():
    text = (ASSETS / "kibana" / "inferq.ndjson").read_text()
    assert text == dashboards.render(), "run python -m ops.kibana.dashboards"
    objects = [json.loads(line) for line in text.splitlines()]
    kinds = [o["type"] for o in objects]
    assert kinds.count("index-pattern") == 1 and kinds.count("dashboard") == 1
    vis_ids = {o["id"] for o in objects if o["type"] == "visualization"}
    board = next(o for o in objects if o["type"] == "dashboard")
    assert {r["id"] for r in board["references"]} == vis_ids
    for o in objects:
        if o["type"] == "visualization":
            json.loads(o["attributes"]["visState"])
            json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


def test_every_field_a_panel_uses_is_mapped():
    mapped = field_paths()
    for panel in dashboards.PANELS:
        used = dashboards.panel_fields(panel)
        assert used <= mapped, f"{panel.vid} uses unmapped {used - mapped}"
    assert "inferq.delivery.reason" in dashboards.panel_fields(dashboards.PANELS[-1])  # filters count


def test_grafana_json_is_generated_and_queries_only_exported_metrics():
    assert json.loads((ASSETS / "grafana" / "inferq.json").read_text()) == grafana.dashboard()
    known = declared()
    for panel in grafana.dashboard()["panels"]:
        for target in panel["targets"]:
            assert not unknown_references(target["expr"], target["legendFormat"], known), panel["title"]


def test_the_reference_check_refuses_unknown_metrics_and_labels():
    known = declared()
    assert unknown_references("rate(inferq_nope_total[1m])", "", known) == ["metric inferq_nope_total"]
    assert unknown_references("sum by (colour) (inferq_workers_up)", "", known) == [
        "label colour of inferq_workers_up"
    ]
    assert unknown_references("inferq_workers_up", "{{pod}}", known) == ["label pod of inferq_workers_up"]
    assert not unknown_references('inferq_results_total{status="done"}', "{{model}}", known)


def test_alert_rules_parse_and_use_exported_metrics():
    rules = yaml.safe_load((ASSETS / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {
        "InferqConsumerLagGrowing",
        "InferqQueueStuck",
        "InferqErrorRateHigh",
        "InferqNoWorkers",
        "InferqLogSpoolGrowing",
        "InferqIntakeDown",
        "InferqIntakeStalled",
    } <= names
    known = declared()
    for r in rules:
        assert not unknown_references(r["expr"], "", known, labels=False), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["runbook"]


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with the Debian prometheus package"
)
def test_promtool_accepts_the_rules_and_config(tmp_path):
    from ops.metrics.prometheus import render_prometheus_config
    from schemas.settings import Settings

    out = subprocess.run(
        ["promtool", "check", "rules", str(ASSETS / "prometheus" / "alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    config = render_prometheus_config(Settings(), tmp_path)
    out = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with the Debian prometheus package"
)
def test_promtool_parses_every_grafana_expression(tmp_path):
    """Each panel's expression as a recording rule: ``promtool check rules`` parses them all."""
    rules = [
        {"record": f"inferq:grafana_panel_{panel['id']}_{target['refId']}", "expr": target["expr"]}
        for panel in grafana.dashboard()["panels"]
        for target in panel["targets"]
    ]
    path = tmp_path / "grafana-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_import_posts_the_data_view_then_the_saved_objects():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/_import"):
            return httpx.Response(200, json={"success": True, "successCount": 13, "errors": []})
        return httpx.Response(200, json={"data_view": {"id": "inferq-logs"}})

    report = import_dashboards(
        "http://kibana:5601", auth=("u", "p"), space="ops", transport=httpx.MockTransport(handler)
    )
    assert report.imported == 13 and not report.errors
    view, imported = seen
    assert view.url.path == "/s/ops/api/data_views/data_view" and json.loads(view.content)["override"] is True
    assert (
        imported.url.path == "/s/ops/api/saved_objects/_import" and imported.url.params["overwrite"] == "true"
    )
    assert all(r.headers["kbn-xsrf"] and r.headers["authorization"].startswith("Basic ") for r in seen)
    assert dashboards.render().encode() in imported.content


def test_import_reports_kibana_refusals_as_a_stack_error():
    transport = httpx.MockTransport(lambda r: httpx.Response(401, text="unauthorized"))
    with pytest.raises(StackError, match="401"):
        import_dashboards("http://kibana:5601", transport=transport)
