"""ADMIT (workers/store/lua/admit.lua) with hostile values, on a real Redis: every request of a call
travels in one JSON document decoded by cjson, so what a sender controls (texts, ids, tenants,
deadlines) must come out of the script byte for byte, or be refused before it, never break a call.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from schemas.messages import InferenceRequest, ResultStatus, now_ms
from schemas.naming import deadlines_key, scoped_id
from schemas.results import queued_result
from schemas.settings import Settings
from tests import stack
from workers.store.admission import ADMIT_CHUNK
from workers.store.store import Admission, ResultStore, request_digest

NASTY = [
    'a "quoted" text',
    "back\\slash \\u0000 \\\\ \\",
    "nul \x00 in the middle",
    "controls \x01\x1f\x7f\b\f\n\r\t",
    "unicode ☃ 𝄞 \u2028 \u2029 \ufeff \uffff",
    "]]}}\"',:{[ lua [[long]] bracket ]] --comment",
    "%s %d \\x \\z",
]
TENANT = "t-1.x:y/z_"  # every character a tenant name may hold


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory) -> Iterator[Settings]:
    with stack.redis_only(Settings(log_ship=False), tmp_path_factory.mktemp("admit-hostile")) as settings:
        yield settings


def store_with(settings: Settings) -> ResultStore:
    return ResultStore.from_settings(settings.model_copy(update={"key_prefix": f"h{now_ms():.0f}"}))


def test_texts_that_could_break_json_or_lua_are_stored_byte_for_byte(redis_only):
    store = store_with(redis_only)
    reqs = [
        InferenceRequest(task="embed", model="echo-384", inputs=[t, t], tenant=TENANT if i % 2 else None)
        for i, t in enumerate(NASTY)
    ]
    queued = [queued_result(r, {"received_ms": now_ms()}) for r in reqs]
    assert store.admit([(request_digest(r), q) for r, q in zip(reqs, queued, strict=True)]) == [
        Admission.NEW
    ] * len(reqs)
    for r, q in zip(reqs, queued, strict=True):
        assert store.client.hget(store._result_key(r), "body") == q.model_dump_json().encode()
        assert store.get(r.request_id, r.tenant) == q
    # read again: the same content is pending, another text under the same id a conflict
    again = [(request_digest(r), q) for r, q in zip(reqs, queued, strict=True)]
    other = reqs[0].model_copy(update={"inputs": "other"})
    assert store.admit([*again, (request_digest(other), queued_result(other, {}))]) == [
        *[Admission.PENDING] * len(reqs),
        Admission.CONFLICT,
    ]


@pytest.mark.parametrize(
    ("deadline", "in_flight"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), 1),  # the latest a datetime holds
        (datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23, minutes=-59))), 1),  # past 9999
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59))), 0),  # before year 1 in UTC
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc), 0),  # negative epoch ms
    ],
)
def test_extreme_deadlines_are_admitted_and_enrolled_exactly(redis_only, deadline, in_flight):
    store = store_with(redis_only)
    r = InferenceRequest(task="embed", model="echo-384", inputs="x", deadline=deadline)
    sid = scoped_id(None, r.request_id)
    ms = r.deadline_ms()
    assert ms is not None
    assert store.admit([(request_digest(r), queued_result(r, {}))], {sid: ms}) == [Admission.NEW]
    assert store.client.zscore(deadlines_key(store._s), sid) == pytest.approx(ms)
    assert store.in_flight() == in_flight  # a request already past its deadline holds no place
    expired = store.expire_due()
    assert [e.request_id for e in expired] == ([] if in_flight else [r.request_id])
    if not in_flight:
        assert expired[0].status is ResultStatus.EXPIRED


def test_a_poll_of_many_requests_with_duplicates_spans_chunks_in_order(redis_only):
    store = store_with(redis_only)
    reqs = [
        InferenceRequest(task="embed", model="echo-384", inputs=f"{NASTY[i % 7]} {i}", tenant=f"t{i % 5}")
        for i in range(ADMIT_CHUNK * 2 + 7)
    ]
    items = [(request_digest(r), queued_result(r, {})) for r in reqs]
    twice = items + items[:3]  # the same requests again at the end of the poll, in another chunk
    verdicts = store.admit(twice)
    assert verdicts == [Admission.NEW] * len(reqs) + [Admission.PENDING] * 3
    assert store.in_flight() == len(reqs)
