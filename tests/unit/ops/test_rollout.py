"""The rollout's transitions (pure): start a canary, promote it, roll back, and what each refuses."""

from __future__ import annotations

import pytest

from ops.rollout import normalise_version, promoted, rolled_back, started
from schemas.errors import ConfigurationError
from schemas.versions import Rollout

M = "all-MiniLM-L6-v2"


def test_start_promote_rollback_walk_forward_and_back():
    canary = started(None, M, "int8abc", 10)
    assert len(canary.salt) == 16  # a new key for the split
    assert canary == Rollout(current=None, canary="int8abc", canary_share_bp=1_000, salt=canary.salt)
    live = promoted(canary, M)
    assert live == Rollout(current="int8abc", previous=None)
    assert rolled_back(live, M) is None  # back to the default build: no rollout left
    # a second canary over a promoted version: rollback drops only the canary
    second = started(live, M, "v3", 25)
    assert rolled_back(second, M) == Rollout(current="int8abc")
    assert rolled_back(promoted(second, M), M) == Rollout(current="int8abc")


@pytest.mark.parametrize(
    "call",
    [
        lambda: started(None, M, "v", 101),
        lambda: started(None, M, "v", -1),
        lambda: started(Rollout(current="v"), M, "v", 10),
        lambda: promoted(None, M),
        lambda: promoted(Rollout(current="v"), M),
        lambda: rolled_back(None, M),
        lambda: normalise_version(M, "minilm-intent@abc"),
        lambda: normalise_version(M, "no spaces"),
        lambda: normalise_version(M, "x" * 65),
    ],
)
def test_what_makes_no_sense_is_refused_with_a_reason(call):
    with pytest.raises(ConfigurationError):
        call()


def test_a_result_s_model_version_names_a_version():
    assert normalise_version(M, f"{M}@53aa51172d14") == "53aa51172d14"
    assert normalise_version(M, "53aa51172d14") == "53aa51172d14"


def test_a_new_canary_gets_a_new_key_for_its_split_and_a_new_share_keeps_it():
    """Request ids cannot be picked to land on a canary (or avoid it): the split is keyed with a
    salt tenants never see, new for each canary, kept while only its share changes (the ids
    already on it stay there)."""
    first = started(None, M, "v2", 10)
    wider = started(first, M, "v2", 50)
    other = started(first, M, "v3", 10)
    assert wider.salt == first.salt and other.salt != first.salt
    assert Rollout.from_fields(first.fields()) == first  # kept in Redis with the rollout
