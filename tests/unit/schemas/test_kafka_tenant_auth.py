"""Kafka tenant authentication (schemas.tenancy), pure: signatures, refusals, key parsing."""

from __future__ import annotations

import secrets

import pytest

from schemas.errors import ConfigurationError, Forbidden, Unauthorized
from schemas.messages import InferenceRequest
from schemas.settings import Settings
from schemas.tenancy import (
    SIGNATURE_HEADER,
    SIGNED_AT_HEADER,
    TENANT_HEADER,
    TenantAuth,
    parse_keys,
    sign,
    signed_headers,
)

ALICE, BOB = secrets.token_bytes(32), secrets.token_bytes(32)


def request(tenant: str | None) -> tuple[InferenceRequest, bytes]:
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="hello", tenant=tenant)
    return req, req.wire_json().encode()


def signed() -> TenantAuth:
    return TenantAuth("signed", {"alice": ALICE, "bob": BOB})


def test_trust_takes_the_body_as_it_is():
    req, value = request("bob")
    TenantAuth("trust", {}).check(value, None, req)


def test_a_correctly_signed_record_passes():
    req, value = request("alice")
    signed().check(value, signed_headers("alice", ALICE, value), req)


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [(TENANT_HEADER, b"alice")],
        [(SIGNATURE_HEADER, b"00" * 32)],
        [(TENANT_HEADER, b"alice"), (SIGNATURE_HEADER, b"00" * 32)],
        [(TENANT_HEADER, b"mallory"), (SIGNATURE_HEADER, b"00" * 32)],
    ],
)
def test_missing_unknown_or_wrong_signatures_are_unauthorized(headers):
    req, value = request("alice")
    with pytest.raises(Unauthorized):
        signed().check(value, headers, req)


def test_a_signature_over_other_bytes_is_unauthorized():
    req, value = request("alice")
    headers = signed_headers("alice", ALICE, value + b" ")
    with pytest.raises(Unauthorized):
        signed().check(value, headers, req)


def test_signing_as_oneself_for_another_tenant_is_forbidden():
    for claimed in ("bob", None):
        req, value = request(claimed)
        with pytest.raises(Forbidden):
            signed().check(value, signed_headers("alice", ALICE, value), req)


def test_a_repeated_header_cannot_override_the_first():
    req, value = request("bob")
    headers = [*signed_headers("alice", ALICE, value), (TENANT_HEADER, b"bob")]
    with pytest.raises(Forbidden):
        signed().check(value, headers, req)


def test_key_parsing_and_its_errors_never_echo_a_key():
    hexkey = ALICE.hex()
    assert parse_keys(f" alice:{hexkey} , bob:{BOB.hex()},") == {"alice": ALICE, "bob": BOB}
    for bad in (f"alice{hexkey}", "alice:abcd", "alice:zz" * 20, f":{hexkey}"):
        with pytest.raises(ConfigurationError) as e:
            parse_keys(bad)
        assert hexkey not in str(e.value)


def test_signed_without_keys_refuses_to_start():
    with pytest.raises(ConfigurationError):
        TenantAuth.from_settings(Settings(kafka_tenant_auth="signed"))


def test_sign_is_hmac_sha256_hex():
    import hashlib
    import hmac

    assert sign(b"v", b"k" * 16, 1234) == hmac.new(b"k" * 16, b"1234\nv", hashlib.sha256).hexdigest()


def at(now_ms: float) -> TenantAuth:
    """Signed tenants with a one-hour TTL and a fixed clock."""
    return TenantAuth("signed", {"alice": ALICE}, max_age_ms=3_600_000, clock_ms=lambda: now_ms)


def test_a_copy_of_a_signed_record_is_refused_once_the_store_has_forgotten_it():
    req, value = request("alice")
    headers = signed_headers("alice", ALICE, value, signed_at_ms=1_000_000)
    at(1_000_000 + 3_599_000).check(value, headers, req)  # within the TTL: the store dedups a copy
    with pytest.raises(Unauthorized, match="signed 3601 s ago"):
        at(1_000_000 + 3_601_000).check(value, headers, req)


def test_a_signature_dated_far_ahead_or_with_its_time_changed_is_refused():
    req, value = request("alice")
    with pytest.raises(Unauthorized, match="ahead"):
        at(0).check(value, signed_headers("alice", ALICE, value, signed_at_ms=3_600_000), req)
    headers = dict(signed_headers("alice", ALICE, value, signed_at_ms=1_000_000))
    headers[SIGNED_AT_HEADER] = b"2000000"  # a replayer refreshing the time breaks the signature
    with pytest.raises(Unauthorized, match="does not match"):
        at(2_000_000).check(value, list(headers.items()), req)
    del headers[SIGNED_AT_HEADER]
    with pytest.raises(Unauthorized, match="signed-at"):
        at(1_000_000).check(value, list(headers.items()), req)
