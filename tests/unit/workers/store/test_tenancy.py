"""Scoped request ids and per-tenant limits as settings describe them (the store's scripts that
enforce them run against a real Redis in tests/integration/test_tenancy.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest
from schemas.naming import result_key, scoped_id, tenant_keys, unscoped_id
from schemas.settings import Settings
from workers.store.store import Admission, quota_error


def test_the_same_id_of_two_tenants_is_two_keys_and_tenantless_ids_are_unchanged():
    s = Settings()
    rid = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="x").request_id
    assert scoped_id(None, rid) == rid
    assert scoped_id("a", rid) != scoped_id("b", rid)
    assert len({result_key(s, scoped_id(t, rid)) for t in (None, "a", "b")}) == 3
    for tenant in (None, "a", "team.x-1_2"):
        assert unscoped_id(scoped_id(tenant, rid)) == (tenant, rid)


def test_tenant_limits_take_overrides_then_defaults_and_tenantless_is_one_bucket():
    s = Settings(
        tenant_max_inflight=10, tenant_max_result_bytes=1_000, tenant_limits="acme=3:500, =2:0,big=0:0"
    )
    assert s.tenant_quota("acme") == (3, 500)
    assert s.tenant_quota(None) == s.tenant_quota("") == (2, 0)
    assert s.tenant_quota("big") == (0, 0)  # off for that tenant
    assert s.tenant_quota("other") == (10, 1_000)
    assert tenant_keys(s, None) == tenant_keys(s, "")


@pytest.mark.parametrize("bad", ["acme", "acme=x", "acme=1:2:3", "a=1,,b=2"])
def test_malformed_tenant_limits_are_refused_at_start(bad):
    with pytest.raises(ValidationError):
        Settings(tenant_limits=bad)


def test_a_refusal_names_the_tenant_and_the_limit_it_hit():
    s = Settings(tenant_max_inflight=7, tenant_max_result_bytes=9_000)
    assert Admission.QUOTA_INFLIGHT.over_quota and Admission.QUOTA_BYTES.over_quota
    assert not any(
        a.over_quota for a in (Admission.NEW, Admission.PENDING, Admission.TERMINAL, Admission.CONFLICT)
    )
    inflight = quota_error(Admission.QUOTA_INFLIGHT, "acme", s)
    assert (
        inflight.code is ErrorCode.QUOTA_EXCEEDED and "'acme'" in inflight.message and "7" in inflight.message
    )
    size = quota_error(Admission.QUOTA_BYTES, None, s)
    assert "without a tenant" in size.message and "9000" in size.message and "expire" in size.hint
