"""Webhooks for real: the sink POSTs to a real HTTPS receiver on a loopback port (a CA made here),
which checks the signature with the receivers' own helper; a receiver that fails the first tries,
a redirect, an untrusted certificate, a slow receiver, and a private address, refused at send time
by the sink and at admission by the HTTP API and the intake (the session stack)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from producers.api import create_app
from producers.client import InferqClient
from producers.webhooks import verify
from schemas.messages import InferenceRequest, ResultStatus, new_request_id
from schemas.settings import Settings
from tests.webhooks import Answer, Receiver, receiver
from workers.delivery.sink import Delivery, DeliveryFailed
from workers.delivery.webhook import WebhookSink

MODEL = "all-MiniLM-L6-v2"
SECRET, ACME_SECRET = "tests-webhook-secret-0001", "tests-webhook-secret-acme"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def rx(tmp_path_factory) -> Iterator[Receiver]:
    with receiver(tmp_path_factory.mktemp("webhooks")) as r:
        yield r


def sink_settings(rx: Receiver, **over: Any) -> Settings:
    fields: dict[str, Any] = dict(
        webhook_allow_hosts="localhost,127.0.0.0/8,::1/128",
        webhook_allow_ports="*",
        webhook_keys=SecretStr(f":{SECRET},acme:{ACME_SECRET}"),
        webhook_ca_certs=str(rx.ca_file),
        webhook_connect_timeout_s=2.0,
        webhook_read_timeout_s=2.0,
        webhook_total_timeout_s=3.0,
    )
    fields.update(over)
    return Settings(**fields)


def delivery(url: str, tenant: str | None = None, attempt: int = 1) -> Delivery:
    rid = new_request_id()
    body = json.dumps({"request_id": rid, "status": "succeeded", "tenant": tenant}).encode()
    return Delivery(rid, tenant, url, body, attempt=attempt, trace_id=TRACE_ID)


@pytest.fixture
def sink(rx) -> Iterator[WebhookSink]:
    s = WebhookSink(sink_settings(rx))
    yield s
    s.close()


def test_a_signed_result_reaches_the_receiver_which_verifies_it(rx, sink):
    rx.answer()
    before = len(rx.received)
    d = delivery(rx.url("/hook?token=abc"), tenant="acme")
    sink.send(d)
    got = rx.received[before:]
    assert len(got) == 1 and got[0].path == "/hook?token=abc" and got[0].body == d.body
    headers = got[0].headers
    assert verify(ACME_SECRET, headers, got[0].body) > 0  # the receivers' helper, keyed per tenant
    with pytest.raises(ValueError):
        verify(SECRET, headers, got[0].body)  # another tenant's key does not verify it
    assert headers["X-Inferq-Request-Id"] == d.request_id and headers["Content-Type"] == "application/json"
    assert headers["Host"] == f"localhost:{rx.port}"  # SNI/Host: the URL's host, not the vetted address
    version, trace, span, flags = headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", TRACE_ID, "01") and len(span) == 16


def test_a_receiver_failing_the_first_tries_gets_the_result_on_a_retry(rx, sink):
    rx.answer(Answer(503), Answer(429))
    before = len(rx.received)
    d = delivery(rx.url(host="127.0.0.1"))  # an address literal, allowed by its CIDR; no tenant
    for attempt, reason in ((1, "http_503"), (2, "http_429")):
        with pytest.raises(DeliveryFailed) as failed:
            sink.send(Delivery(**{**d.__dict__, "attempt": attempt}))
        assert failed.value.retryable and failed.value.reason == reason
    sink.send(Delivery(**{**d.__dict__, "attempt": 3}))
    got = rx.received[before:]
    assert [r.headers["X-Inferq-Attempt"] for r in got] == ["1", "2", "3"]
    assert all(r.body == d.body and verify(SECRET, r.headers, r.body) for r in got)


@pytest.mark.parametrize(
    ("answer", "reason"), [(Answer(302, {"Location": "/elsewhere"}), "http_302"), (Answer(404), "http_404")]
)
def test_a_redirect_is_not_followed_and_a_4xx_is_not_retried(rx, sink, answer, reason):
    rx.answer(answer)
    before = len(rx.received)
    with pytest.raises(DeliveryFailed) as failed:
        sink.send(delivery(rx.url()))
    assert failed.value.reason == reason and not failed.value.retryable
    assert [r.path for r in rx.received[before:]] == ["/hook"]  # nothing sent to /elsewhere


def test_a_certificate_the_sink_does_not_trust_is_not_retried(rx):
    untrusting = WebhookSink(sink_settings(rx, webhook_ca_certs=""))  # the system's CAs only
    try:
        with pytest.raises(DeliveryFailed) as failed:
            untrusting.send(delivery(rx.url()))
        assert failed.value.reason == "tls_certificate" and not failed.value.retryable
    finally:
        untrusting.close()


def test_a_receiver_trickling_its_answer_is_cut_at_the_total_timeout(rx):
    slow = WebhookSink(sink_settings(rx, webhook_read_timeout_s=1.0, webhook_total_timeout_s=0.6))
    rx.answer(Answer(trickle_s=0.05))  # a byte every 50 ms: no single read ever waits 1 s
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            slow.send(delivery(rx.url()))
    finally:
        slow.close()
    assert failed.value.reason == "timeout" and failed.value.retryable
    assert time.monotonic() - started < 1.5


def test_an_endless_answer_body_is_read_only_a_few_kib(rx, sink):
    rx.answer(Answer(endless=True))
    started = time.monotonic()
    sink.send(delivery(rx.url()))  # 200: delivered, without waiting for the body's end
    assert time.monotonic() - started < 1.0


def test_a_closed_port_is_a_retryable_connection_error(rx, sink):
    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DeliveryFailed) as failed:
        sink.send(delivery(f"https://127.0.0.1:{port}/hook"))
    assert failed.value.reason == "connect_error" and failed.value.retryable


def test_a_host_resolving_to_a_private_address_is_refused_at_send_time(rx):
    by_name = WebhookSink(sink_settings(rx, webhook_allow_hosts="localhost"))  # no CIDR allows loopback
    before = len(rx.received)
    try:
        with pytest.raises(DeliveryFailed) as failed:
            by_name.send(delivery(rx.url()))
    finally:
        by_name.close()
    assert failed.value.reason == "refused_address" and not failed.value.retryable
    assert rx.received[before:] == []  # never connected


def test_a_private_callback_url_is_refused_at_admission_over_http(stack, settings):
    on = settings.model_copy(update={"webhook_allow_hosts": "*", "webhook_keys": SecretStr(f":{SECRET}")})
    body = {"schema_version": 1, "task": "embed", "model": MODEL, "inputs": "hook me"}
    with TestClient(create_app(on)) as api:
        for url in ("https://10.0.0.1/hook", "https://169.254.169.254/latest", "https://[::ffff:127.0.0.1]/"):
            r = api.post("/v1/requests", json={**body, "callback_url": url})
            assert r.status_code == 422 and r.json()["error"]["code"] == "callback_refused", r.text
        r = api.post("/v1/requests", json={**body, "callback_url": "https://user@hooks.example.com/"})
        assert r.status_code == 422 and "userinfo" in r.json()["error"]["message"], r.text
        r = api.post("/v1/requests", json={**body, "callback_url": "https://hooks.example.com/h"})
        assert r.status_code == 202, r.text


def test_a_callback_url_is_refused_by_the_intake_for_a_tenant_without_a_key(client: InferqClient):
    """The session stack allows webhooks to loopback and has keys for no tenant and "acme" only
    (webhooks off altogether is the same refusal: tests/unit/schemas/test_callbacks.py)."""
    request = InferenceRequest.model_validate(
        {
            "task": "embed",
            "model": MODEL,
            "inputs": "hook me",
            "tenant": "keyless",
            "callback_url": "https://localhost:1/h",
        }
    )
    client.publish(request).get(10)
    result = client.wait(request.request_id, timeout_s=30, tenant="keyless")
    assert result.status is ResultStatus.FAILED and result.error is not None
    assert result.error.code.value == "callback_refused" and "no webhook signing key" in result.error.message


def test_receivers_holding_every_try_to_the_timeout_hold_up_a_round_only_once(rx):
    """A tenant whose callbacks all trickle to the total timeout: a dispatcher round with eight of
    them ends in about one timeout, not eight (one by one, every other tenant's deliveries and the
    outbox touches waited behind them: eight times the timeout per round)."""
    from tests.unit.workers.delivery.test_dispatcher import FakeOutbox, Report
    from workers.delivery.dispatcher import Dispatcher
    from workers.store.outbox import Entry

    settings = sink_settings(rx, webhook_read_timeout_s=1.0, webhook_total_timeout_s=0.8)
    slow = WebhookSink(settings)
    rx.answer(*[Answer(trickle_s=0.05) for _ in range(8)])
    deliver = json.dumps({"url": rx.url("/slow")}).encode()
    entries = [Entry(f"{int(time.time() * 1000)}-{i}", new_request_id(), b"{}", deliver) for i in range(8)]
    report = Report()
    dispatcher = Dispatcher(FakeOutbox(entries), {"webhook": slow}, settings, report)
    started = time.monotonic()
    try:
        assert dispatcher.step(block_ms=0) == 8  # all eight under way: the round does not wait
        assert time.monotonic() - started < 0.5
        while len(report.outcomes) < 8 and time.monotonic() - started < 5:
            dispatcher.step(block_ms=20)
    finally:
        dispatcher.close()
    assert time.monotonic() - started < 3.0  # one by one: 8 x 0.8 s
    assert [o[2:] for o in report.outcomes] == [("retried", "timeout")] * 8
