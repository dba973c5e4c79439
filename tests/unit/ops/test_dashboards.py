"""The Kibana, Grafana and Prometheus assets: generated from code, consistent with what we emit."""

from __future__ import annotations

import json
import re
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
from schemas.errors import StackError
from workers.telemetry import metrics as instruments
from workers.telemetry.template import field_paths

ASSETS = Path(__file__).resolve().parents[3] / "ops" / "assets"
EXPORTER_ONLY = {
    "inferq_kafka_consumer_lag",
    "inferq_celery_queue_depth",
    "inferq_requests_in_flight",
    "inferq_workers_up",
    "inferq_log_spool_bytes",
    "inferq_gpu_utilization_ratio",
    "inferq_gpu_memory_used_bytes",
    "inferq_gpu_memory_total_bytes",
    "inferq_exporter_errors_total",
    "inferq_intake_up",  # workers.telemetry.liveness, from the intakes' poll stamps
    "inferq_intake_last_poll_age_seconds",
    "inferq_cache_used_bytes",  # the result cache's own Redis, read at scrape time
    "inferq_cache_max_bytes",
    "inferq_cache_evicted_keys",
}


def exported_names() -> set[str]:
    names = set(EXPORTER_ONLY)
    for metric in vars(instruments).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        for family in metric.describe():
            kind = family.type
            if kind == "counter":
                names.add(family.name + "_total")
            elif kind == "histogram":
                names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def metric_names(promql: str) -> set[str]:
    return set(re.findall(r"\binferq_[a-z_]+", promql))


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
    for vid, _, _, query, aggs in dashboards.PANELS:
        used = dashboards.vis_fields(aggs) | set(re.findall(r"([a-z_@.]+) :", query))
        assert used <= mapped, f"{vid} uses unmapped {used - mapped}"


def test_grafana_json_is_generated_and_queries_only_exported_metrics():
    assert json.loads((ASSETS / "grafana" / "inferq.json").read_text()) == grafana.dashboard()
    known = exported_names()
    for panel in grafana.dashboard()["panels"]:
        for target in panel["targets"]:
            assert metric_names(target["expr"]) <= known, (
                panel["title"],
                metric_names(target["expr"]) - known,
            )


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
    known = exported_names()
    for r in rules:
        assert metric_names(r["expr"]) <= known, (r["alert"], metric_names(r["expr"]) - known)
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


def test_es_aggs_nests_buckets_in_order_with_metrics_inside():
    aggs = dashboards.PANELS[6][4]  # batch compute: two metrics, time, terms
    tree = dashboards.es_aggs(aggs)
    ((_, time_node),) = tree.items()
    assert "date_histogram" in time_node
    ((_, terms_node),) = time_node["aggs"].items()
    assert terms_node["terms"]["field"] == "inferq.model"
    assert set(terms_node["aggs"]) == {"1", "2"}


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
