"""The poison drill at test size (``inferq-ops drill --only poison``): hostile records of every kind
among valid requests, through Kafka and HTTP, on a stack of its own.

No valid request may be lost and the intake may never die (it is restarted and counted if it does);
each hostile kind is answered on both paths, the forged tenant refused on both.
"""

from __future__ import annotations

import pytest

from ops.drill.poison import ROUNDS, hostile_kinds, run_poison
from schemas.settings import Settings

pytestmark = pytest.mark.timeout(1_200)

REQUESTS = 400


@pytest.fixture(scope="module")
def poison(tmp_path_factory) -> dict:
    base = Settings(
        state_dir=tmp_path_factory.mktemp("poison"),
        kafka_partitions=3,
        kafka_session_timeout_ms=6_000,
        torch_threads=1,
        transport_batch_size=32,
    )
    return run_poison(base, REQUESTS, timeout_s=300.0)


def test_no_valid_request_is_lost_and_the_intake_never_dies(poison: dict) -> None:
    assert poison["requests"] == REQUESTS
    assert poison["intake_restarts"] == 0, poison["kinds"]
    assert poison["lost"] == 0, poison["kinds"]
    assert poison["ok"]


def test_every_hostile_kind_is_answered_on_both_paths(poison: dict) -> None:
    kinds = poison["kinds"]
    assert set(kinds) == set(hostile_kinds(lambda: None))  # type: ignore[arg-type,return-value]
    for kind, paths in kinds.items():
        assert sum(paths["kafka"].values()) == sum(paths["http"].values()) == ROUNDS, kind
        assert "unanswered" not in paths["kafka"], (kind, paths)
        assert "http:error" not in paths["http"] and not any(a.startswith("http:5") for a in paths["http"])
    assert kinds["forged_tenant"]["kafka"] == {"dead_letter:forbidden": ROUNDS}
    assert all(a.startswith("http:403") for a in kinds["forged_tenant"]["http"])
    assert all(a.startswith("http:409") for a in kinds["duplicate_id_other_content"]["http"])
    assert kinds["unsigned"]["kafka"] == {"dead_letter:unauthorized": ROUNDS}
    assert kinds["unsigned"]["http"] == {"http:401/unauthorized": ROUNDS}
