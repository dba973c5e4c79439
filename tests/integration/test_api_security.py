"""The result API with API keys: tenants see only their own requests. Real Redis and Kafka
(the session stack's), the app in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ops.stack import Stack
from producers.api import create_app
from producers.auth import digest, new_key
from producers.client import InferqClient
from schemas.messages import new_request_id
from schemas.settings import Settings
from tests.stack import eventually

KEY_A, KEY_B = new_key(), new_key()
MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def secured(stack, settings) -> Iterator[TestClient]:
    keyed = settings.model_copy(
        update={
            "api_keys": SecretStr(f"tenant-a:{digest(KEY_A)},tenant-b:{digest(KEY_B)}"),
            "api_max_body_bytes": 4096,
        }
    )
    with TestClient(create_app(keyed)) as c:
        yield c


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_calls_without_a_valid_key_are_401(secured):
    for headers in ({}, as_("iq_not-a-key"), {"Authorization": "Basic abc"}):
        r = secured.get("/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert secured.get("/v1/models", headers={"X-API-Key": KEY_A}).status_code == 200


def test_a_tenant_cannot_read_or_cancel_another_tenants_request(secured, client):
    r = secured.post(
        "/v1/requests",
        json={"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "mine"},
        headers=as_(KEY_A),
    )
    assert r.status_code == 202, r.text
    rid = r.json()["request_id"]
    assert secured.get(f"/v1/results/{rid}", headers=as_(KEY_A)).json()["tenant"] == "tenant-a"
    unknown = secured.get(f"/v1/results/{new_request_id()}", headers=as_(KEY_B))
    foreign = secured.get(f"/v1/results/{rid}", headers=as_(KEY_B))
    assert foreign.status_code == unknown.status_code == 404  # indistinguishable from an unknown id
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    assert rid not in foreign.text  # ids are echoed only as a short prefix
    assert secured.delete(f"/v1/results/{rid}", headers=as_(KEY_B)).status_code == 404

    def done() -> dict[str, str] | None:
        got = secured.get(f"/v1/results/{rid}", params={"wait_ms": 5_000}, headers=as_(KEY_A)).json()
        return got if got["status"] == "done" else None

    finished = eventually(done, 60, "tenant A's request to finish")
    assert finished["tenant"] == "tenant-a"  # B's cancel did nothing


def test_posting_for_another_tenant_is_refused(secured):
    body = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "not mine", "tenant": "tenant-b"}
    r = secured.post("/v1/requests", json=body, headers=as_(KEY_A))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


def test_oversized_bodies_are_413(secured):
    body = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "x" * 5000}
    r = secured.post("/v1/requests", json=body, headers=as_(KEY_A))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_cors_is_off_unless_origins_are_named(secured, settings):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    r = secured.options("/v1/models", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    allowed = settings.model_copy(update={"api_cors_origins": "https://app.example"})
    with TestClient(create_app(allowed)) as c:
        ok = c.options("/v1/models", headers={**preflight, "Origin": "https://app.example"})
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        bad = c.options("/v1/models", headers=preflight)
        assert "access-control-allow-origin" not in bad.headers


def test_no_secret_reaches_any_service_log(stack: Stack, settings: Settings, client: InferqClient) -> None:
    client.wait(client.submit("embed", "all-MiniLM-L6-v2", "something to log about"), 60)
    secrets = [settings.kafka_sasl_password.get_secret_value(), settings.flower_password.get_secret_value()]
    secrets += [key.rpartition(":")[2] for key in settings.webhook_keys.get_secret_value().split(",")]
    logs = sorted((settings.state_dir / "logs").glob("*.log"))
    assert {p.stem for p in logs} >= {"worker", "intake", "api", "flower"}
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"{secret!r} appears in {path.name}"
