"""The webhook sink without a network: the URL policy again at send time, a rebinding resolver's
private answer refused before any connection, the W3C traceparent it sends."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.settings import Settings
from workers.delivery.sink import Delivery, DeliveryFailed
from workers.delivery.webhook import WebhookSink, resolve, traceparent

SECRET = "sink-unit-secret-00000001"


def send_all(sink: WebhookSink, deliveries: list[Delivery]) -> list[DeliveryFailed | None]:
    """One try of each delivery at once, as the dispatcher's pool runs a concurrent sink's tries."""

    def one(d: Delivery) -> DeliveryFailed | None:
        try:
            sink.send(d)
        except DeliveryFailed as e:
            return e
        return None

    with ThreadPoolExecutor(len(deliveries)) as pool:
        return list(pool.map(one, deliveries))


def sink_with(answers: list[str], **over) -> tuple[WebhookSink, list[str]]:
    fields: dict[str, Any] = dict(
        webhook_allow_hosts="hooks.example.com", webhook_keys=SecretStr(f":{SECRET}")
    )
    fields.update(over)
    sink = WebhookSink(Settings(**fields))
    asked: list[str] = []

    def rebinding(host: str, port: int):
        asked.append(host)
        return [ipaddress.ip_address(a) for a in answers]

    sink.resolve = rebinding
    return sink, asked


def send(
    sink: WebhookSink, url: str = "https://hooks.example.com/h", tenant: str | None = None
) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as e:
        sink.send(Delivery("r-1", tenant, url, b"{}"))
    sink.close()
    return e.value


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["10.1.2.3", "::1"], ["169.254.169.254"], ["::ffff:192.168.0.1"], ["0.0.0.0"], []],
)
def test_an_allowed_name_resolving_to_refused_addresses_is_never_connected(answers):
    sink, asked = sink_with(answers)
    failed = send(sink)
    assert asked == ["hooks.example.com"]
    assert failed.reason == "refused_address" and not failed.retryable


def test_a_private_address_in_an_allow_listed_cidr_is_connected(monkeypatch):
    sink, _ = sink_with(["10.1.2.3"], webhook_allow_hosts="hooks.example.com,10.1.0.0/16")
    connected: list[tuple[str, int]] = []

    def no_network(address, timeout=None, source_address=None):
        connected.append(address)
        raise ConnectionRefusedError("no network in unit tests")

    monkeypatch.setattr(socket, "create_connection", no_network)
    failed = send(sink)
    assert connected == [("10.1.2.3", 443)]  # the vetted address, not a second lookup of the name
    assert failed.reason == "connect_error" and failed.retryable


def test_the_policy_is_checked_again_at_send_time():
    sink, asked = sink_with(["203.0.114.9"], webhook_allow_hosts="other.example.com")
    assert send(sink).reason == "refused_url" and asked == []
    sink, _ = sink_with(["203.0.114.9"], webhook_keys=SecretStr(""))
    assert send(sink).reason == "no_key"  # no key for the tenant any more: never sent unsigned
    sink, _ = sink_with(["203.0.114.9"])
    failed = send(sink, "https://10.0.0.1/h")
    assert failed.reason == "refused_url" and not failed.retryable


def test_a_resolver_failure_is_retryable():
    sink = WebhookSink(Settings(webhook_allow_hosts="*", webhook_keys=SecretStr(f":{SECRET}")))

    def broken(host: str, port: int):
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")

    sink.resolve = broken
    failed = send(sink, "https://hooks.example.com/h")
    assert failed.reason == "dns_error" and failed.retryable


def test_resolve_answers_addresses_for_localhost():
    answers = resolve("localhost", 443)
    assert answers and all(a.is_loopback for a in answers)  # IPv4-mapped answers come back as IPv4


def test_traceparent_is_w3c_with_a_new_span_per_try():
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    first, second = traceparent(trace), traceparent(trace)
    assert first and second and first != second
    assert re.fullmatch(rf"00-{trace}-[0-9a-f]{{16}}-01", first)
    for bad in (None, "", "0" * 32, trace.upper(), trace[:-1], trace + "0"):
        assert traceparent(bad) is None


def test_refusals_log_neither_the_secret_nor_the_body_nor_the_path(caplog):
    sink, _ = sink_with(["127.0.0.1"])
    with caplog.at_level(logging.DEBUG), pytest.raises(DeliveryFailed):
        sink.send(
            Delivery("r-1", None, "https://hooks.example.com/h?token=PATHTOKEN", b'{"text":"BODYTEXT"}')
        )
    sink.close()
    assert "refused" in caplog.text and "hooks.example.com" in caplog.text
    for private in ("PATHTOKEN", "BODYTEXT", SECRET):
        assert private not in caplog.text


def test_a_tenant_whose_dns_never_answers_holds_only_its_share_of_the_lookups():
    """Lookups of a host whose DNS never answers stay stuck past their timeout. One tenant's such
    callbacks used to take every lookup thread, so every other tenant's webhook timed out in DNS;
    now a tenant has at most half of them in flight and gets ``dns_busy`` past that."""
    import threading

    from workers.delivery.webhook import DNS_THREADS

    settings = Settings(
        webhook_allow_hosts="stuck.example.com,hooks.example.com",
        webhook_keys=SecretStr(f"mallory:{SECRET},acme:{SECRET}"),
        webhook_connect_timeout_s=0.2,
    )
    sink = WebhookSink(settings)
    unstick = threading.Event()

    def resolver(host: str, port: int):
        if host == "stuck.example.com":
            unstick.wait(10)
        return [ipaddress.ip_address("10.0.0.1")]  # refused: nothing is ever connected to

    sink.resolve = resolver
    try:
        stuck = [
            Delivery(f"m-{i}", "mallory", "https://stuck.example.com/h", b"{}") for i in range(DNS_THREADS)
        ]
        reasons = [f.reason if f else None for f in send_all(sink, stuck)]
        assert set(reasons) == {"dns_timeout", "dns_busy"}
        # many at once of one tenant whose DNS answers: each waits its turn, none is refused busy
        honest = [
            Delivery(f"a-{i}", "acme", "https://hooks.example.com/h", b"{}") for i in range(3 * DNS_THREADS)
        ]
        assert {f.reason if f else None for f in send_all(sink, honest)} == {"refused_address"}
    finally:
        unstick.set()
        sink.close()
