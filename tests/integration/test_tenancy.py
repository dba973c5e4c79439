"""The result store's scripts on a real Redis: request ids scoped per tenant, in-flight sets that
cannot leak, and per-tenant limits enforced in ADMIT (issue 15, points 4, 5 and 10)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from schemas.errors import InvalidRequest
from schemas.messages import InferenceRequest, ResultStatus, now_ms
from schemas.naming import inflight_key, scoped_id, tenant_keys
from schemas.results import queued_result
from schemas.results import result as request_result
from schemas.settings import Settings
from tests import stack
from tests.stack import eventually
from workers.store.store import (
    Admission,
    DoneWatcher,
    ResultStore,
    request_digest,
)


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory) -> Iterator[Settings]:
    with stack.redis_only(Settings(log_ship=False), tmp_path_factory.mktemp("tenancy")) as settings:
        yield settings


def store_with(settings: Settings, **limits) -> ResultStore:
    s = settings.model_copy(update={"key_prefix": f"t{now_ms():.0f}", **limits})
    return ResultStore.from_settings(s)


def req(text: str, tenant: str | None, rid: str | None = None, **kw) -> InferenceRequest:
    fields = {"task": "embed", "model": "all-MiniLM-L6-v2", "inputs": text, "tenant": tenant, **kw}
    if rid is not None:
        fields["request_id"] = rid
    return InferenceRequest.model_validate(fields)


def admit(store: ResultStore, *requests: InferenceRequest, deadline: bool = False) -> list[Admission]:
    deadlines = (
        {scoped_id(r.tenant, r.request_id): d for r in requests if (d := r.deadline_ms()) is not None}
        if deadline
        else None
    )
    return store.admit([(request_digest(r), queued_result(r, {})) for r in requests], deadlines)


def ended(r: InferenceRequest, status: ResultStatus = ResultStatus.FAILED, message: str = "x"):
    return request_result(r, status, {"done_ms": now_ms()}, InvalidRequest(message))


def test_the_same_id_used_by_two_tenants_is_two_independent_requests(redis_only):
    store = store_with(redis_only)
    a = req("tenant a's text", "a")
    b = req("tenant b's different text", "b", rid=a.request_id)
    assert admit(store, a, b) == [Admission.NEW, Admission.NEW]  # before: b was a CONFLICT
    assert store.get(a.request_id) is None  # no tenant: another namespace
    with DoneWatcher(store) as watcher:
        assert store.advance([ended(a)]) == [True]
        assert watcher.finished(5.0) == [scoped_id("a", a.request_id)]
    assert store.get(a.request_id, "a").status is ResultStatus.FAILED
    assert store.get(a.request_id, "b").status is ResultStatus.QUEUED
    assert store.get_many([a.request_id], "b")[a.request_id].tenant == "b"
    assert store.cancel(a.request_id, "b").status is ResultStatus.CANCELLED
    assert store.cancel(a.request_id, "c").status is None  # unknown to tenant c
    assert store.in_flight() == 0


def test_every_way_a_request_ends_releases_its_place_in_flight(redis_only):
    store = store_with(redis_only)
    past = datetime.now(timezone.utc) + timedelta(milliseconds=50)
    done, cancelled, expiring, forgotten, refused = (req(f"ends {i}", "t") for i in range(5))
    late = req("deadline soon", "t", deadline=past)
    assert admit(store, done, cancelled, expiring, forgotten, late, deadline=True) == [Admission.NEW] * 5
    assert store.in_flight() == 5 and store.tenant_usage("t")[0] == 5
    assert store.in_flight_by_model(["all-MiniLM-L6-v2"]) == {"all-MiniLM-L6-v2": 5}
    store.advance([ended(done, ResultStatus.DONE)])
    store.advance([ended(done, ResultStatus.DONE)])  # a duplicate ending releases nothing twice
    store.cancel(cancelled.request_id, "t")
    store.forget(forgotten.request_id, "t")
    eventually(lambda: store.expire_due(), what="the deadline sweep to end the late one")
    # one the intake answers directly (never admitted) does not count at all
    store.advance([ended(refused)], only_if_absent=True)
    assert store.in_flight() == 1 and store.tenant_usage("t")[0] == 1  # only `expiring`: still queued
    assert store.get(expiring.request_id, "t").status is ResultStatus.QUEUED


def test_a_result_that_expires_while_queued_stops_counting(redis_only):
    store = store_with(redis_only, result_ttl_s=1)
    assert admit(store, req("forgotten by its TTL", None)) == [Admission.NEW]
    assert store.in_flight() == 1
    eventually(lambda: store.in_flight() == 0, timeout_s=5, what="the expired result to stop counting")
    assert store.in_flight_by_model(["all-MiniLM-L6-v2"]) == {"all-MiniLM-L6-v2": 0}


def test_a_tenant_over_its_inflight_limit_is_refused_and_others_are_not(redis_only):
    store = store_with(redis_only, tenant_max_inflight=2, tenant_limits="vip=5:0")
    flood = [req(f"flood {i}", "flood") for i in range(4)]
    assert admit(store, *flood) == [
        Admission.NEW,
        Admission.NEW,
        Admission.QUOTA_INFLIGHT,
        Admission.QUOTA_INFLIGHT,
    ]
    assert store.get(flood[2].request_id, "flood") is None  # refused: nothing recorded
    assert admit(store, req("calm", "calm")) == [Admission.NEW]
    assert admit(store, *(req(f"vip {i}", "vip") for i in range(5))) == [Admission.NEW] * 5
    assert (
        admit(store, req("no tenant 1", None), req("no tenant 2", None), req("no tenant 3", None))[2]
        is Admission.QUOTA_INFLIGHT
    )  # tenant-less requests share one bucket
    store.advance([ended(flood[0])])
    assert admit(store, flood[2]) == [Admission.NEW]  # room again once one ended
    assert admit(store, flood[1]) == [Admission.PENDING]  # a redelivery is never refused


def test_a_tenant_over_its_stored_bytes_is_refused_until_results_expire(redis_only):
    store = store_with(redis_only, tenant_max_result_bytes=5_000, result_ttl_s=2)
    big = req("a big result", "big")
    assert admit(store, big) == [Admission.NEW]
    store.advance([ended(big, message="y" * 6_000)])
    assert store.tenant_usage("big")[1] > 6_000
    assert admit(store, req("next", "big")) == [Admission.QUOTA_BYTES]
    assert admit(store, req("another tenant", "small")) == [Admission.NEW]
    eventually(
        lambda: admit(store, req("after expiry", "big")) == [Admission.NEW],
        timeout_s=6,
        what="the tenant's bytes to be released when its result expired",
    )
    assert store.tenant_usage("big")[1] < 1_000


def test_a_request_admitted_past_its_deadline_never_holds_a_place_in_flight(redis_only):
    """The intake admits a backlog record whose deadline passed, then answers it expired: between
    the two it used to count in flight (a skimmed backlog of them pushed the count past the bound)."""
    store = store_with(redis_only)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    late, live = req("too late", None, deadline=past), req("in time", None)
    assert admit(store, late, live, deadline=True) == [Admission.NEW, Admission.NEW]
    assert store.in_flight() == 1  # only the live one
    store.advance([ended(late, ResultStatus.EXPIRED)])
    assert store.in_flight() == 1 and store.get(late.request_id).status is ResultStatus.EXPIRED


def test_one_admit_call_mixes_tenants_models_duplicates_and_lapsed_members(redis_only):
    """ADMIT prunes lapsed members and sets the sets' expiry once per key per call, and sends each
    distinct key once: a call mixing tenants, models, a duplicate and an id taken by other content
    still answers each request as if admitted alone, in order."""
    store = store_with(redis_only, tenant_max_inflight=2)
    inflight, _, _ = tenant_keys(store._s, "t1")
    store.client.zadd(inflight, {"t1~lapsed-1": now_ms() - 1_000, "t1~lapsed-2": now_ms() - 1})
    store.client.zadd(store.inflight_key, {"t1~lapsed-1": now_ms() - 1_000})
    first = req("tenant one, first", "t1")
    other_model = req("tenant one, other model", "t1", model="echo-384")
    over = req("tenant one, over its limit", "t1")
    taken = req("a different text under the first's id", "t1", rid=first.request_id)
    calls = [
        first,
        req("tenant two", "t2", model="echo-384"),
        first,
        taken,
        other_model,
        over,
        req("none", None),
    ]
    assert admit(store, *calls) == [
        Admission.NEW,
        Admission.NEW,
        Admission.PENDING,  # the same request twice in one poll: the second sees the first
        Admission.CONFLICT,
        Admission.NEW,
        Admission.QUOTA_INFLIGHT,  # sees the two before it (the lapsed members no longer count)
        Admission.NEW,
    ]
    assert store.client.zscore(inflight, "t1~lapsed-2") is None
    assert store.client.zscore(store.inflight_key, "t1~lapsed-1") is None
    assert store.in_flight() == 4
    assert store.in_flight_by_model(["all-MiniLM-L6-v2", "echo-384"]) == {
        "all-MiniLM-L6-v2": 2,
        "echo-384": 2,
    }
    assert store.tenant_usage("t1")[0] == 2 and store.tenant_usage("t2")[0] == 1
    for key in (inflight, store.inflight_key, inflight_key(store._s, "echo-384")):
        assert 0 < store.client.ttl(key) <= store._s.result_ttl_s
    assert store.get(over.request_id, "t1") is None
