"""API keys: parsing the key ring, looking tenants up by digest, and unguessable request ids."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from producers.auth import KeyRing, digest, new_key
from schemas.errors import ConfigurationError
from schemas.messages import new_request_id
from schemas.settings import Settings


def ring(value: str) -> KeyRing:
    return KeyRing.from_settings(Settings(api_keys=SecretStr(value)))


def test_keys_are_looked_up_by_digest_only():
    a, b = new_key(), new_key()
    keys = ring(f"acme:{digest(a)}, globex:{digest(b)}")
    assert keys.enabled and keys.tenant_for(a) == "acme" and keys.tenant_for(b) == "globex"
    assert keys.tenant_for(None) is None and keys.tenant_for(a + "x") is None and keys.tenant_for("") is None
    assert a not in str(keys.tenants)  # only digests are held


def test_no_keys_means_authentication_is_off():
    assert not ring("").enabled


@pytest.mark.parametrize("bad", ["acme", "acme:xyz", ":" + "a" * 64, "acme:" + "A" * 64])
def test_malformed_entries_are_a_configuration_error(bad):
    with pytest.raises(ConfigurationError, match="tenant:sha256hex"):
        ring(bad)


def test_keys_and_request_ids_are_unguessable():
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000 and all(len(k) >= 43 for k in keys)  # 256 random bits each
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24,}", i) for i in ids)  # ≥ 144 random bits


@pytest.mark.parametrize("tenant", ["alice@example.com", "acme corp", "-acme", "x" * 129, "ünï", "a~b"])
def test_tenant_names_the_request_schema_refuses_are_a_configuration_error(tenant):
    with pytest.raises(ConfigurationError, match="tenant name"):
        ring(f"{tenant}:{digest(new_key())}")


@pytest.mark.parametrize("tenant", ["acme", "team-1.eu:prod/a", "A" * 128])
def test_tenant_names_the_request_schema_accepts_load(tenant):
    key = new_key()
    assert ring(f"{tenant}:{digest(key)}").tenant_for(key) == tenant


def test_the_cli_refuses_to_make_a_key_for_a_name_requests_cannot_carry(capsys):
    from ops.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["api-key", "--tenant", "alice@example.com"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "tenant name" in err and "iq_" not in err
    assert main(["api-key", "--tenant", "alice"]) in (0, None)
    out = capsys.readouterr().out
    assert "alice:" in out and "iq_" in out
