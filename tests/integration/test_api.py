"""The HTTP result API and Flower, against the running stack."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from schemas.messages import InferenceRequest, ResultStatus, new_request_id
from schemas.naming import requests_topic
from tests.stack import eventually
from workers.store.store import Admission


@pytest.fixture
def api(stack, settings):
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as c:
        yield c


def test_unknown_id_is_404(api):
    assert api.get(f"/v1/results/{new_request_id()}").status_code == 404
    assert api.get("/v1/results/not-a-valid-id!").status_code == 404


def test_post_then_poll_until_done(api):
    r = api.post(
        "/v1/requests",
        json={
            "schema_version": 1,
            "task": "classify",
            "model": "minilm-intent",
            "inputs": "please connect me with customer support",
            "top_k": 2,
        },
    )
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    assert r.json()["result_url"] == f"/v1/results/{rid}"
    assert api.get(f"/v1/results/{rid}").json()["status"] in {"queued", "running", "done"}  # readable at once

    def done():
        body = api.get(f"/v1/results/{rid}").json()
        return body if body["status"] == ResultStatus.DONE.value else None

    body = eventually(done, 60, "the HTTP-submitted request to finish")
    assert body["model_version"].startswith("minilm-intent@")
    assert len(body["outputs"][0]["labels"]) == 2
    assert {"received_ms", "queued_ms", "batch_start_ms", "done_ms", "batch_size"} <= body["timings"].keys()


def test_post_is_idempotent_and_refuses_a_reused_id(api):
    body = {
        "schema_version": 1,
        "request_id": new_request_id(),
        "task": "embed",
        "model": "all-MiniLM-L6-v2",
        "inputs": "same",
    }
    assert api.post("/v1/requests", json=body).status_code == 202
    assert api.post("/v1/requests", json=body).status_code == 202  # a client retry
    r = api.post("/v1/requests", json={**body, "inputs": "different"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_request_id"

    def done():
        res = api.get(f"/v1/results/{body['request_id']}").json()
        return res if res["status"] == "done" else None

    assert len(eventually(done, 60, "the request to finish")["outputs"]) == 1


def test_invalid_post_gets_a_typed_422(api):
    r = api.post("/v1/requests", json={"schema_version": 1, "task": "embed", "model": "nope", "inputs": "x"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_model"
    r = api.post(
        "/v1/requests", json={"schema_version": 1, "task": "embed", "model": "all-MiniLM-L6-v2", "inputs": []}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_openapi_and_models_are_served(api):
    spec = api.get("/openapi.json").json()
    assert "/v1/results/{request_id}" in spec["paths"] and "/v1/requests" in spec["paths"]
    names = {m["name"] for m in api.get("/v1/models").json()}
    assert names == {
        "all-MiniLM-L6-v2",
        "minilm-intent",
        "tiny-lm",
        "smollm2-135m-instruct",
        "causal-lm",
        "echo-384",
    }
    assert api.get("/healthz").json() == {"ok": True}


def test_flower_is_behind_auth_and_shows_real_task_states(stack, settings, client):
    client.wait(client.submit("embed", "all-MiniLM-L6-v2", "seen in flower"), timeout_s=60)
    base = f"http://127.0.0.1:{settings.flower_port}"
    assert httpx.get(f"{base}/api/tasks", timeout=10).status_code == 401
    auth = (settings.flower_user, settings.flower_password.get_secret_value())

    def succeeded():
        tasks = httpx.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
        return [t for t in tasks.values() if t["name"] == "inferq.infer" and t["state"] == "SUCCESS"]

    tasks = eventually(succeeded, 30, "Flower to show a finished inferq.infer task")
    assert "done" in tasks[0]["result"]


def test_cli_submits_from_stdin_and_prints_results(stack, settings):
    from ops.stack import settings_env

    env = {**stack.env, **settings_env(settings)}
    proc = subprocess.run(
        [sys.executable, "-m", "producers.cli", "--task", "classify", "-"],
        input="I want to talk to a real person right now\nset a timer for 25 minutes\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    import json

    results = [json.loads(line) for line in lines]
    assert [r["outputs"][0]["labels"][0]["label"] for r in results] == ["connect_to_human", "timer"]
    assert "2/2" in proc.stderr  # the progress bar


def test_ops_status_reports_every_service(stack):
    status = stack.status()
    want = {"broker", "redis", "worker", "intake", "delivery", "api", "exporter", "prometheus", "flower"}
    want |= {"cache"} if stack.s.cache_redis_url else set()  # the result cache's own redis-server
    assert set(status) == want
    assert all(v["running"] and v["ready"] for v in status.values()), status
    assert requests_topic(stack.s) == "inferq.requests"


def test_delete_cancels_a_queued_request_and_the_pipeline_leaves_it_cancelled(api, client, stack):
    request = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="never mind")
    assert client.admit(request) is Admission.NEW  # queued, as the API records a POSTed request
    r = api.delete(f"/v1/results/{request.request_id}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["error"]["code"] == "cancelled"
    client.publish(request)  # the intake sees it was already answered and drops it
    marker = client.submit("embed", "all-MiniLM-L6-v2", "after the cancelled one")
    assert client.wait(marker, timeout_s=60).status is ResultStatus.DONE
    assert client.result(request.request_id).status is ResultStatus.CANCELLED
    assert api.delete(f"/v1/results/{request.request_id}").json()["status"] == "cancelled"  # idempotent


def test_a_finished_request_cannot_be_cancelled_and_unknown_ids_are_404(api, client):
    rid = client.submit("embed", "all-MiniLM-L6-v2", "too late to cancel")
    client.wait(rid, timeout_s=60)
    r = api.delete(f"/v1/results/{rid}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_cancellable"
    assert client.cancel(rid) is ResultStatus.DONE
    assert api.delete(f"/v1/results/{new_request_id()}").status_code == 404
    assert client.cancel(new_request_id()) is None


def test_long_poll_returns_as_soon_as_the_result_is_done(api):
    r = api.post(
        "/v1/requests",
        json={"schema_version": 1, "task": "embed", "model": "all-MiniLM-L6-v2", "inputs": "long poll"},
    )
    rid = r.json()["request_id"]
    body = api.get(f"/v1/results/{rid}", params={"wait_ms": 30_000}, timeout=40).json()
    assert body["status"] == "done"
    assert api.get(f"/v1/results/{rid}", params={"wait_ms": 10**6}).status_code == 422  # over the cap
