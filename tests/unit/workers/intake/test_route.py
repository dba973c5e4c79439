"""Where the intake sends a request (pure: the rollout and the live versions are stubs)."""

from __future__ import annotations

import secrets

from schemas.messages import InferenceRequest
from schemas.naming import scoped_id
from schemas.versions import Rollout, Route, bucket
from workers.intake.admit import Admissions

M = "all-MiniLM-L6-v2"


class Served:
    def __init__(self, live: set[str]) -> None:
        self.live = live

    def is_available(self, name: str) -> bool:
        return name in self.live


class Rollouts:
    def __init__(self, rollout: Rollout | None) -> None:
        self.rollout = rollout

    def get(self, model: str) -> Rollout | None:
        return self.rollout


def intake(rollout: Rollout | None, live: set[str]) -> Admissions:
    a = Admissions.__new__(Admissions)
    a.rollouts = Rollouts(rollout)  # type: ignore[assignment]
    a.served = Served(live)  # type: ignore[assignment]
    return a


def canary_request(share_bp: int) -> InferenceRequest:
    while True:
        req = InferenceRequest(task="embed", model=M, inputs="x", request_id=secrets.token_hex(12))
        if bucket(scoped_id(req.tenant, req.request_id)) < share_bp:
            return req


def test_pinned_requests_go_to_their_version_whatever_the_rollout():
    req = InferenceRequest(task="embed", model=f"{M}@v9", inputs="x")
    assert intake(Rollout(current="v1"), set()).route(req) == Route(M, "v9")


def test_unpinned_requests_follow_the_rollout_or_go_to_the_default_queue():
    req = InferenceRequest(task="embed", model=M, inputs="x")
    assert intake(None, set()).route(req) == Route(M)
    assert intake(Rollout(current="v1"), set()).route(req) == Route(M, "v1")


def test_a_canary_nobody_serves_yet_leaves_its_share_on_the_current_version():
    rollout = Rollout(current="v1", canary="v2", canary_share_bp=5_000)
    req = canary_request(5_000)
    assert intake(rollout, {f"{M}@v1", f"{M}@v2"}).route(req) == Route(M, "v2")
    assert intake(rollout, {f"{M}@v1"}).route(req) == Route(M, "v1")
    # over the default queue (no current version set) as well
    assert intake(Rollout(canary="v2", canary_share_bp=5_000), {M}).route(req) == Route(M)
