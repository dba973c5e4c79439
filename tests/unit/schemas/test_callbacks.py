"""The callback URL policy: hostile URLs refused at admission with a typed error, the allow-list,
the refused address ranges (and their IPv6 disguises), the signing keys and the signature."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from schemas.callbacks import (
    check_callback_url,
    parse_callback_url,
    parse_webhook_keys,
    refused_range,
    sign,
    webhook_key,
)
from schemas.errors import CallbackRefused, ErrorCode, InvalidRequest
from schemas.settings import Settings
from schemas.validation import parse_request

SECRET = "unit-webhook-secret-00001"


def on(**over) -> Settings:
    fields: dict[str, Any] = dict(
        webhook_allow_hosts="hooks.example.com,*.example.org,198.51.100.0/24,10.9.0.0/16,*",
        webhook_keys=SecretStr(f":{SECRET},acme:{SECRET}-acme,team:a:{SECRET}-colon"),
    )
    fields.update(over)
    return Settings(**fields)


def refused(url: str, settings: Settings | None = None, tenant: str | None = None) -> str:
    with pytest.raises(CallbackRefused) as e:
        check_callback_url(url, settings or on(), tenant)
    assert e.value.code is ErrorCode.CALLBACK_REFUSED and isinstance(e.value, InvalidRequest)
    return e.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://hooks.example.com/h", "must be https"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://hooks.example.com:70/_x", "scheme 'gopher'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("https:/hooks.example.com/h", "no host"),
        ("https://user:pw@hooks.example.com/h", "userinfo"),
        ("https://hooks.example.com@10.0.0.1/h", "userinfo"),
        ("https://hooks.example.com\\@10.0.0.1/", "backslash"),
        ("https://hooks.example.com /h", "space"),
        ("https://hooks.example.com/\x00", "control"),
        ("https://bücher.example.org/", "non-ASCII"),
        ("https://2130706433/", "numeric address"),
        ("https://0x7f.1/", "numeric address"),
        ("https://0x7f000001/", "numeric address"),
        ("https://127.1/", "numeric address"),
        ("https://0177.0.0.1/", "numeric address"),
        ("https://127.000.0.1/", "not a canonical IPv4"),
        ("https://256.1.1.1/", "not a canonical IPv4"),
        ("https://hooks.example.com./h", "ends with a dot"),
        ("https://%31%32%37.0.0.1/", "numeric address"),
        ("https://%41.example.org/", "not a valid host name"),
        ("https://-bad.example.org/", "not a valid host name"),
        ("https://" + "a" * 64 + ".example.org/", "not a valid host name"),
        ("https://" + "a." * 130 + "example.org/", "characters; the most is 253"),
        ("https://hooks.example.com:0/", "port"),
        ("https://hooks.example.com:65536/", "port"),
        ("https://hooks.example.com:+443/", "port"),
        ("https://hooks.example.com:/", "port"),
        ("https://hooks.example.com:8443/", "port 8443 is not allowed"),
        ("https://::1/", "several ':'"),
        ("https://[::1/", "unclosed"),
        ("https://[fe80::1%25eth0]/", "zone"),
        ("https://[not-v6]/", "not an IPv6"),
        ("https://[::1]/", "loopback"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
        ("https://[64:ff9b::a9fe:a9fe]/", "link local embedded"),  # NAT64 of 169.254.169.254
        ("https://127.0.0.1/", "loopback"),
        ("https://10.0.0.1/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link local"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://100.64.0.1/", "not global"),  # carrier-grade NAT
        ("https://" + "h" * 2041, "2049 characters"),
    ],
)
def test_hostile_callback_urls_are_refused_with_a_typed_error(url, says):
    assert says in refused(url)


def test_a_refusal_never_quotes_the_path_or_query():
    message = refused("https://10.0.0.1/hook?token=TOPSECRET")
    assert "TOPSECRET" not in message and "/hook" not in message


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("https://hooks.example.com/h?x=1#frag", "hooks.example.com", 443, "/h?x=1"),
        ("HTTPS://Hooks.Example.COM", "hooks.example.com", 443, "/"),
        ("https://a.b.example.org?q", "a.b.example.org", 443, "/?q"),
        ("https://xn--bcher-kva.example.org/", "xn--bcher-kva.example.org", 443, "/"),
        ("https://198.51.100.7/h", "198.51.100.7", 443, "/h"),  # documentation range, allow-listed
        ("https://10.9.1.2/h", "10.9.1.2", 443, "/h"),  # private, but its CIDR is listed
        ("https://203.0.114.9/h", "203.0.114.9", 443, "/h"),  # public, allowed by *
        ("https://[2606:4700::1111]/h", "2606:4700::1111", 443, "/h"),
        ("https://anything.example.net/", "anything.example.net", 443, "/"),  # by *
    ],
)
def test_allowed_callback_urls_parse_to_what_is_connected_to(url, host, port, target):
    parsed = check_callback_url(url, on(), None)
    assert (parsed.host, parsed.port, parsed.target) == (host, port, target)


def test_the_allow_list_names_suffixes_and_networks_without_a_star():
    strict = on(webhook_allow_hosts="hooks.example.com,*.example.org,10.9.0.0/16")
    assert check_callback_url("https://hooks.example.com/", strict, None).host == "hooks.example.com"
    assert check_callback_url("https://deep.a.example.org/", strict, None)
    assert check_callback_url("https://10.9.3.4/", strict, None).address == ipaddress.ip_address("10.9.3.4")
    assert "not in the allow-list" in refused("https://example.org/", strict)  # *.suffix: below it only
    assert "not in the allow-list" in refused("https://evil-example.org/", strict)
    assert "not in the allow-list" in refused("https://hooks.example.com.evil.net/", strict)
    assert "not in the allow-list" in refused("https://203.0.114.9/", strict)  # a public literal, no *


def test_names_starting_with_a_digit_are_names_and_single_addresses_are_networks():
    s = on(webhook_allow_hosts="1password.example.com,203.0.113.9,2001:db8::7")
    assert check_callback_url("https://1password.example.com/", s, None)
    assert check_callback_url("https://203.0.113.9/", s, None)  # documentation range, listed alone
    assert check_callback_url("https://[2001:db8::7]/", s, None)
    assert "is private" in refused("https://203.0.113.10/", s)  # its neighbour is not listed
    assert "not in the allow-list" in refused("https://8.8.8.8/", s)


def test_webhooks_off_refuses_every_callback_url_clearly():
    assert "webhooks are off" in refused("https://hooks.example.com/", on(webhook_allow_hosts=""))


def test_ports_and_http_to_loopback_are_settings():
    ports = on(webhook_allow_ports="443,8000-8100")
    assert check_callback_url("https://hooks.example.com:8080/", ports, None).port == 8080
    assert "port 8101" in refused("https://hooks.example.com:8101/", ports)
    loop = on(
        webhook_allow_hosts="localhost,127.0.0.0/8", webhook_allow_http_loopback=True, webhook_allow_ports="*"
    )
    assert check_callback_url("http://localhost:8080/h", loop, None).scheme == "http"
    assert check_callback_url("http://127.0.0.1:8080/h", loop, None).port == 8080
    assert "https" in refused("http://hooks.example.com/", on(webhook_allow_http_loopback=True))
    assert "https" in refused(
        "http://localhost:8080/h", on(webhook_allow_hosts="localhost", webhook_allow_ports="*")
    )


def test_a_tenant_without_a_signing_key_is_refused_at_admission():
    assert "no webhook signing key" in refused("https://hooks.example.com/", on(), tenant="other")
    no_default = on(webhook_keys=SecretStr(f"acme:{SECRET}"))
    assert "no webhook signing key" in refused("https://hooks.example.com/", no_default, tenant=None)
    assert check_callback_url("https://hooks.example.com/", no_default, "acme")


def test_keys_are_per_tenant_and_tenant_names_may_hold_colons():
    s = on()
    assert webhook_key(s, None) == SECRET.encode()
    assert webhook_key(s, "acme") == f"{SECRET}-acme".encode()
    assert webhook_key(s, "team:a") == f"{SECRET}-colon".encode()
    assert webhook_key(s, "nobody") is None
    assert parse_webhook_keys("") == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webhook_keys", SecretStr("acme:tooshort")),
        ("webhook_keys", SecretStr("acme-without-colon-0123456789")),
        ("webhook_keys", SecretStr("acme:has spaces in the secret!!")),
        ("webhook_allow_hosts", "0.0.0.0/0"),
        ("webhook_allow_hosts", "::/0"),
        ("webhook_allow_hosts", "bad_name.example.com"),
        ("webhook_allow_hosts", "10.0.0.300/8"),
        ("webhook_allow_ports", "0"),
        ("webhook_allow_ports", "70000"),
        ("webhook_allow_ports", "9000-8000"),
    ],
)
def test_wrong_webhook_settings_stop_the_process_at_start(field, value):
    with pytest.raises(ValidationError) as e:
        Settings(**{field: value})
    assert "tooshort" not in str(e.value)  # a secret is never echoed


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700::1111", "203.0.114.9", "::ffff:8.8.8.8"],
)
def test_public_addresses_are_not_in_a_refused_range(address):
    assert refused_range(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("fec0::1", "site_local"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("2001::a9fe:a9fe", "private"),  # Teredo
        ("2002:a00:1::", "private_embedded"),  # 6to4 of 10.0.0.1
    ],
)
def test_private_and_special_addresses_are_refused(address, reason):
    got = refused_range(ipaddress.ip_address(address))
    assert got is not None and (got == reason or got.startswith(reason.split("_")[0])), got


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'{"request_id":"r1"}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k" * 16, 1_700_000_000, body) == f"v1={expected}"


def test_a_kafka_record_with_a_refused_callback_url_is_an_invalid_request():
    record = {
        "schema_version": 1,
        "task": "embed",
        "model": "all-MiniLM-L6-v2",
        "inputs": "x",
        "callback_url": "https://169.254.169.254/latest/meta-data/",
    }
    with pytest.raises(CallbackRefused):
        parse_request(json.dumps(record).encode(), on())
    record["callback_url"] = "https://hooks.example.com/h"
    assert parse_request(json.dumps(record).encode(), on()).callback_url == "https://hooks.example.com/h"


def test_parse_keeps_ipv6_literals_unbracketed_and_authority_bracketed():
    parsed = parse_callback_url("https://[2606:4700:0::1111]:8443/x")
    assert parsed.host == "2606:4700::1111" and parsed.authority == "[2606:4700::1111]:8443"
    assert parse_callback_url("https://hooks.example.com:443/").authority == "hooks.example.com"
