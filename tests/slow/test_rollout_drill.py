"""The rollout drill at test size (``inferq-ops drill --only rollout``): a 10 % canary of MiniLM's
int8 build, its promotion and its rollback under steady traffic, on a stack of its own. Every
request ends ``done``, none lost or duplicated, each served by the version it was routed to."""

from __future__ import annotations

import json

import pytest

from ops.drill.rollout import ROLLOUT
from ops.drill.run import DrillPlan, run_drills
from schemas.settings import Settings

pytestmark = pytest.mark.timeout(600)

REQUESTS = 600


def test_canary_promote_rollback_under_load_lose_repeat_and_misroute_nothing(tmp_path) -> None:
    base = Settings(state_dir=tmp_path, kafka_partitions=3, kafka_session_timeout_ms=6_000, torch_threads=1)
    report = run_drills(base, DrillPlan(drills=(ROLLOUT,), requests=REQUESTS, rate_per_s=120.0), tmp_path)
    ro = json.loads((tmp_path / "drill.json").read_text())["rollout"]
    assert report["ok"] and ro["ok"]
    assert (ro["requests"], ro["lost"], ro["duplicated"], ro["misrouted"]) == (REQUESTS, 0, 0, 0)
    assert ro["by_status"] == {"done": REQUESTS}
    assert [s["step"] for s in ro["steps"]] == ["start", "promote", "rollback"]
    canary = ro["versions"]["canary"]
    # the int8 build served the canary's share, then everything between promotion and rollback
    assert ro["minilm_by_route_and_version"].get(f"routed {canary} → {canary}", 0) > 0
    assert ro["minilm_by_route_and_version"].get(f"default route → {ro['versions']['default']}", 0) > 0
