"""Model versions on the real stack (issue 20): the session worker serves all-MiniLM-L6-v2's default
(fp32) build and its int8 build (tests/stack.py); requests pin either, and ``inferq-ops rollout``
moves unpinned ones between them (canary, promote, rollback) without restarting anything."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from ops import rollout
from producers.client import InferqClient
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, Timings
from schemas.naming import result_key, rollout_key, version_queue
from schemas.results import queued_result
from schemas.settings import Settings
from schemas.versions import BUCKETS, version_of
from schemas.work import Handoff, WorkItem
from tests.stack import eventually
from workers.store.presence import ServedModels
from workers.store.store import Admission, request_digest
from workers.store.versions import VersionCounts
from workers.transport.app import CELERY_PRIORITY

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["where is my parcel?", "how do I reset my password", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def versions(stack, settings: Settings) -> Iterator[tuple[str, str]]:
    """(default version, int8 version) of MiniLM, once the worker advertises both; the model's
    rollout is removed afterwards (other tests expect the default build)."""
    with InferqClient(settings) as c:
        served = ServedModels(c.store.client, settings)

        def both() -> list[str] | None:
            found = sorted(m.partition("@")[2] for m in served.served() if m.startswith(f"{MODEL}@"))
            return found if len(found) == 2 else None

        eventually(both, timeout_s=120, what="the worker to advertise both MiniLM versions")
        default = version_of(c.wait(c.submit("embed", MODEL, "which version am I?")).model_version)
        assert default is not None
        others = [v for v in both() or [] if v != default]
        assert len(others) == 1
        try:
            yield default, others[0]
        finally:
            c.store.client.delete(rollout_key(settings, MODEL))


def ids(n: int) -> list[str]:
    return [f"ver-{secrets.token_hex(12)}" for _ in range(n)]


def served_by(client: InferqClient, rids: list[str]) -> dict[str, str | None]:
    done = client.wait_all(rids, timeout_s=60)
    assert {r.status for r in done.values()} == {ResultStatus.DONE}
    return {rid: version_of(r.model_version) for rid, r in done.items()}


def test_int8_version_is_served_when_pinned_and_close_to_fp32(client, settings, versions):
    default, int8 = versions
    fp32 = client.wait(client.submit("embed", f"{MODEL}@{default}", TEXTS))
    # pinned by the model_version field, here as a whole result's model_version string
    pinned = InferenceRequest(task="embed", model=MODEL, model_version=f"{MODEL}@{int8}", inputs=TEXTS)
    client.publish(pinned)
    quant = client.wait(pinned.request_id)
    assert fp32.model_version == f"{MODEL}@{default}" and quant.model_version == f"{MODEL}@{int8}"
    a = np.array([o.embedding for o in fp32.outputs or []])
    b = np.array([o.embedding for o in quant.outputs or []])
    assert a.shape == b.shape == (3, 384)
    assert (a != b).any()  # another computation, not a copy
    assert ((a * b).sum(axis=1) > 0.99).all()


def test_a_version_nobody_serves_is_answered_model_unavailable(client, versions):
    """As a model nobody serves (tests/integration/test_unserved.py): within the intake's start-up
    grace it is admitted (its workers may be loading it), then answered at once."""

    def refused() -> InferenceResult | None:
        rid = client.submit("embed", f"{MODEL}@0000deadbeef", "pinned to nothing")
        try:
            return client.wait(rid, timeout_s=2.0)
        except TimeoutError:  # admitted within the grace: it waits for a worker; not this test's
            client.cancel(rid)
            return None

    res = eventually(refused, timeout_s=90, what="the intake's start-up grace to end")
    assert isinstance(res, InferenceResult) and res.status is ResultStatus.FAILED
    assert res.error is not None and res.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert "0000deadbeef" in res.error.message


def test_canary_split_is_sticky_then_promote_and_rollback_move_unpinned_traffic(client, settings, versions):
    default, int8 = versions
    r = client.store.client
    share_bp = 3_000
    split = rollout.start(r, settings, MODEL, int8, share_bp * 100 / BUCKETS)  # its salt keys the split
    # wait for the intake to read it: a probe in the canary's buckets goes to int8
    eventually(
        lambda: _probe(client, split.bucket, lambda b: b < share_bp) == int8,
        timeout_s=20,
        what="the canary routed",
    )
    batch = ids(300)
    for rid in batch:
        client.submit("embed", MODEL, "canary or not", request_id=rid)
    got = served_by(client, batch)
    expected = {rid: int8 if split.bucket(rid) < share_bp else default for rid in batch}
    assert got == expected  # each id where its hash says, and served by the version it was routed to
    canary = sum(v == int8 for v in got.values())
    assert 60 <= canary <= 120  # 30 % of 300 = 90, ± ~4 standard deviations
    # the route chosen at admission is kept with the result; a retry of an id is the same request
    again = batch[0]
    route = r.hget(result_key(settings, again), "route")  # "" = the default queue
    assert route is not None and route.decode() == (int8 if expected[again] == int8 else "")
    client.submit("embed", MODEL, "canary or not", request_id=again)
    client.flush()
    assert served_by(client, [again])[again] == expected[again]

    rollout.promote(r, settings, MODEL)
    eventually(
        lambda: _probe(client, split.bucket, lambda b: b >= share_bp) == int8, timeout_s=20, what="promoted"
    )
    promoted = ids(40)
    for rid in promoted:
        client.submit("embed", MODEL, "after the promotion", request_id=rid)
    assert set(served_by(client, promoted).values()) == {int8}

    assert rollout.rollback(r, settings, MODEL) is None  # back to the default build
    eventually(
        lambda: _probe(client, split.bucket, lambda b: True) == default, timeout_s=20, what="rolled back"
    )
    back = ids(40)
    for rid in back:
        client.submit("embed", MODEL, "after the rollback", request_id=rid)
    assert set(served_by(client, back).values()) == {default}


def _probe(
    client: InferqClient, bucket: Callable[[str], int], want_bucket: Callable[[int], bool]
) -> str | None:
    """Where a fresh unpinned request whose id's bucket ``want_bucket`` accepts is served."""
    rid = next(rid for rid in iter(lambda: ids(1)[0], None) if want_bucket(bucket(rid)))
    client.submit("embed", MODEL, "probe", request_id=rid)
    return served_by(client, [rid])[rid]


def test_watch_rolls_back_a_canary_whose_error_rate_passes_its_threshold(client, settings, versions):
    default, int8 = versions
    r = client.store.client
    rollout.start(r, settings, MODEL, int8, 10)
    healthy = rollout.judge(r, settings, 2, max_error_rate=0.5, max_p99_ms=60_000, min_requests=1)
    assert [(v.model, v.version, v.reason) for v in healthy] == [(MODEL, int8, "")]
    # the counts workers keep per version, as a canary failing every request would leave them
    failing = [
        InferenceResult(
            request_id=rid, status=ResultStatus.FAILED, model=MODEL, model_version=f"{MODEL}@{int8}"
        )
        for rid in ids(200)
    ]
    VersionCounts(r, settings).results_written(failing)
    verdicts = rollout.judge(r, settings, 2, max_error_rate=0.5, max_p99_ms=60_000, min_requests=1)
    assert len(verdicts) == 1 and verdicts[0].reason.startswith("error rate")
    assert r.exists(rollout_key(settings, MODEL)) == 0  # rolled back: the default build again
    rows = {row["model"]: row for row in rollout.status(r, settings, 10)}
    assert rows[MODEL]["counts"][int8]["failed"] >= 200
    assert rows[MODEL]["counts"][default]["ok"] > 0  # counted by the worker as it served the tests above
    assert set(rows[MODEL]["served_versions"]) == {default, int8}


def test_a_request_read_again_keeps_the_version_it_was_first_routed_to(client, settings, versions):
    """A record read twice while its request is queued (an intake replay) after the rollout changed
    in between: ADMIT keeps the first hand-off (and route), and the intake re-sends that one."""
    default, int8 = versions
    store = client.store
    req = InferenceRequest(task="embed", model=MODEL, inputs="read twice")

    def handoff(version: str) -> Handoff:
        item = WorkItem(request=req, timings=Timings(queued_ms=1.0), version=version)
        return Handoff.of(version_queue(settings, MODEL, version), CELERY_PRIORITY[req.priority], item)

    first, second = handoff(int8), handoff(default)
    queued = [(request_digest(req), queued_result(req, {}))]
    assert store.admit(queued, None, {req.request_id: first}) == [Admission.NEW]
    assert store.admit(queued, None, {req.request_id: second}) == [Admission.PENDING]
    assert store.kept([req.request_id]) == {req.request_id: first}
    assert store.client.hget(result_key(settings, req.request_id), "route") == int8.encode()
    client.cancel(req.request_id)  # never sent to a worker: not left queued


def test_the_http_api_takes_a_pinned_version(settings, versions):
    _, int8 = versions
    base = f"http://{settings.api_host}:{settings.api_port}"
    with httpx.Client(base_url=base, timeout=10) as api:
        body = {
            "schema_version": 1,
            "task": "embed",
            "model": MODEL,
            "model_version": int8,
            "inputs": "pinned",
        }
        r = api.post("/v1/requests", json=body)
        assert r.status_code == 202, r.text

        def done() -> dict | None:
            got = api.get(r.json()["result_url"]).json()
            return got if got["status"] == ResultStatus.DONE.value else None

        assert eventually(done, 60, "the pinned HTTP request")["model_version"] == f"{MODEL}@{int8}"
