"""Versions in the contract: pinning in a request, and the sticky canary split (pure)."""

from __future__ import annotations

import secrets

import pytest

from schemas.messages import InferenceRequest
from schemas.versions import BUCKETS, Rollout, Route, bucket, version_of

M = "all-MiniLM-L6-v2"


def test_a_version_is_pinned_by_field_or_by_name_at_version_in_one_wire_form():
    by_field = InferenceRequest(
        task="embed", model=M, model_version="abc123", inputs="x", request_id="a" * 16
    )
    by_name = InferenceRequest(task="embed", model=f"{M}@abc123", inputs="x", request_id="a" * 16)
    whole = InferenceRequest(
        task="embed", model=M, model_version=f"{M}@abc123", inputs="x", request_id="a" * 16
    )
    assert by_field == by_name == whole
    assert by_name.model == M and by_name.model_version == "abc123"
    assert InferenceRequest(task="embed", model=M, inputs="x").model_version is None


@pytest.mark.parametrize(
    "fields",
    [
        {"model": f"{M}@a", "model_version": "b"},  # two pins that disagree
        {"model": M, "model_version": "minilm-intent@a"},  # another model's version
        {"model": M, "model_version": "has space"},
        {"model": M, "model_version": "x" * 65},
        {"model": f"{M}@"},
    ],
)
def test_a_malformed_pin_is_a_validation_error(fields):
    with pytest.raises(ValueError):
        InferenceRequest(task="embed", inputs="x", **fields)


def test_the_canary_split_is_sticky_and_near_its_share():
    rollout = Rollout(current=None, canary="v2", canary_share_bp=1_000)
    rids = [secrets.token_hex(12) for _ in range(5_000)]
    first = [rollout.choose(r) for r in rids]
    assert first == [rollout.choose(r) for r in rids]  # the same id, the same version
    share = first.count("v2") / len(rids)
    assert 0.085 < share < 0.115  # 10 % ± ~3.5 standard deviations
    assert all(0 <= bucket(r) < BUCKETS for r in rids)
    assert Rollout(current="v1").choose(rids[0]) == "v1"
    assert Rollout(current="v1", canary="v2", canary_share_bp=BUCKETS).choose(rids[0]) == "v2"


def test_routes_name_what_workers_advertise():
    assert Route(M).served_as == M
    assert Route(M, "abc").served_as == f"{M}@abc"
    assert version_of(f"{M}@abc") == "abc" and version_of(None) is None and version_of(M) is None


def test_the_split_depends_on_the_rollouts_salt():
    """Ids a tenant found to land on the canary under one rollout tell nothing under another salt."""
    rids = [secrets.token_hex(12) for _ in range(2_000)]
    a = Rollout(canary="v2", canary_share_bp=5_000, salt="00" * 8)
    b = Rollout(canary="v2", canary_share_bp=5_000, salt="ff" * 8)
    same = sum(a.choose(r) == b.choose(r) for r in rids) / len(rids)
    assert 0.4 < same < 0.6  # independent halves agree half the time
    assert all(a.bucket(r) == bucket(r, a.salt) for r in rids[:10])
