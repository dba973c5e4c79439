"""Logs in the ES-API server and the exporter's numbers (the dashboards' queries: test_dashboards.py).

Against the session's real stack: the worker, intake and API ship their ECS records to the
broker's Elasticsearch API and write metrics that ``inferq-exporter`` serves.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from schemas.messages import ResultStatus
from schemas.naming import log_index
from tests.stack import eventually
from workers.telemetry.template import field_paths

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def es(stack, settings) -> Elasticsearch:
    return Elasticsearch(settings.elasticsearch_url)


def search(es: Elasticsearch, settings, query: dict[str, Any], size: int = 500) -> list[dict[str, Any]]:
    es.indices.refresh(index=log_index(settings))
    return [
        h["_source"] for h in es.search(index=log_index(settings), query=query, size=size)["hits"]["hits"]
    ]


def leaf_paths(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in doc.items():
        if isinstance(v, dict):
            out |= leaf_paths(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_logs_of_a_run_are_searchable_with_every_field_mapped(client, settings, es):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ids = [client.submit("embed", MODEL, f"log me {i}", tenant=tenant) for i in range(12)]
    junk_key = f"junk-{uuid.uuid4().hex[:8]}"
    client.publish_raw(junk_key, b"{definitely not json")
    client.flush()
    results = client.wait_all(ids, timeout_s=60)
    assert all(r.status is ResultStatus.DONE for r in results.values())

    def request_records() -> list[dict[str, Any]]:
        docs = search(es, settings, {"term": {"inferq.tenant": tenant}})
        return docs if len(docs) >= len(ids) else []

    docs = eventually(request_records, 30, "the request records in Elasticsearch")
    assert sorted(d["inferq"]["request_id"] for d in docs) == sorted(ids)  # one record per request
    for d in docs:
        stages = d["inferq"]["duration_ms"]
        assert set(stages) == {"kafka", "intake", "queue", "compute", "total"}
        assert stages["total"] >= stages["compute"] > 0
        assert d["event"]["dataset"] == "inferq.request" and d["service"]["name"] == "worker"
        assert "log me" not in str(d)  # inputs are never logged by default
    batch_ids = {d["inferq"]["batch_id"] for d in docs}
    batches = search(es, settings, {"terms": {"inferq.batch_id": sorted(batch_ids)}})
    assert {b["inferq"]["batch_id"] for b in batches if b["event"]["dataset"] == "inferq.batch"} == batch_ids

    letters = eventually(
        lambda: search(es, settings, {"term": {"event.dataset": "inferq.deadletter"}}), 30, "dead letter"
    )
    assert any(d["inferq"]["error_code"] == "invalid_json" for d in letters)

    mapped = field_paths()
    everything = search(es, settings, {"match_all": {}}, size=2000)
    seen = set().union(*(leaf_paths(d) for d in everything))
    assert seen <= mapped, f"shipped but not in the index template: {sorted(seen - mapped)}"
    services = {d["service"]["name"] for d in everything}
    assert {"worker", "intake", "api", "exporter"} <= services


def scrape(settings) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("inferq_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(sample: dict[str, float], prefix: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for k, v in sample.items()
        if (k == prefix or k.startswith(prefix + "{")) and all(w in k for w in want)
    )


def test_exporter_numbers_equal_a_known_load(client, settings):
    before = scrape(settings)
    ids = [client.submit("embed", MODEL, [f"metric {i} a", f"metric {i} b"]) for i in range(10)]
    for i in range(3):
        client.publish_raw(f"bad-{i}", b"\xff\xfe not json")
    client.flush()
    assert all(r.status is ResultStatus.DONE for r in client.wait_all(ids, timeout_s=60).values())

    def settled() -> dict[str, float] | None:
        now = scrape(settings)
        done = total(now, "inferq_results_total", status="done") - total(
            before, "inferq_results_total", status="done"
        )
        letters = total(now, "inferq_dead_letters_total") - total(before, "inferq_dead_letters_total")
        lag = total(now, "inferq_kafka_consumer_lag")
        return now if done == 10 and letters == 3 and lag == 0 else None

    after = eventually(settled, 30, "the exporter to count the load")
    assert isinstance(after, dict)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("inferq_requests_admitted_total", model=MODEL) == 10
    assert delta("inferq_batch_size_sum", model=MODEL) == 20  # texts through the model
    assert delta("inferq_request_latency_seconds_count", model=MODEL, status="done") == 10
    assert delta("inferq_queue_wait_seconds_count", model=MODEL) == 10
    assert delta("inferq_results_total", status="failed") == 0  # no id in the junk to answer
    assert after["inferq_requests_in_flight"] == 0
    assert total(after, "inferq_celery_queue_depth") == 0
    assert total(after, "inferq_workers_up", model=MODEL) == 1
    assert total(after, "inferq_exporter_errors_total") == total(before, "inferq_exporter_errors_total")


def test_the_stacks_prometheus_loads_the_rules_and_scrapes_the_exporter(stack, settings):
    base = f"http://127.0.0.1:{settings.prometheus_port}/api/v1"
    groups = httpx.get(f"{base}/rules", timeout=10).json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"]}
    assert {"InferqNoWorkers", "InferqConsumerLagGrowing", "InferqLogSpoolGrowing"} <= alerts

    def exporter_up() -> bool:
        targets = httpx.get(f"{base}/targets", timeout=10).json()["data"]["activeTargets"]
        return any(t["labels"]["job"] == "inferq" and t["health"] == "up" for t in targets)

    eventually(exporter_up, 30, "Prometheus to scrape the exporter")
    query = httpx.get(f"{base}/query", params={"query": "inferq_workers_up"}, timeout=10).json()
    assert eventually(
        lambda: httpx.get(f"{base}/query", params={"query": "sum(inferq_workers_up)"}, timeout=10).json()[
            "data"
        ]["result"],
        30,
        "a workers-up sample",
    )
    assert query["status"] == "success"
