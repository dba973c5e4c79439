"""The outbox on a real Redis: every script that makes a result terminal adds exactly one entry when
the record names delivery targets, none otherwise; a redelivered terminal write adds none; a full
outbox refuses and counts; the reader takes over, resumes and deletes entries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.messages import InferenceRequest, ResultStatus, now_ms
from schemas.naming import OUTBOX_GROUP, outbox_key, outbox_refused_key, scoped_id
from schemas.replies import targets_json
from schemas.results import queued_result, result
from schemas.settings import Settings
from tests import stack
from workers.store.outbox import Outbox
from workers.store.store import ResultStore, request_digest


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory) -> Iterator[Settings]:
    with stack.redis_only(Settings(log_ship=False), tmp_path_factory.mktemp("outbox")) as settings:
        yield settings


def store_with(settings: Settings, **update: object) -> ResultStore:
    s = settings.model_copy(update={"key_prefix": f"o{now_ms():.0f}", **update})
    return ResultStore.from_settings(s)


def admit(store: ResultStore, reqs: list[InferenceRequest], deadline: float | None = None) -> None:
    sids = [scoped_id(r.tenant, r.request_id) for r in reqs]
    deliveries = {sid: t for sid, r in zip(sids, reqs, strict=True) if (t := targets_json(r, store._s))}
    deadlines = {sid: deadline for sid in sids} if deadline is not None else None
    store.admit([(request_digest(r), queued_result(r, {})) for r in reqs], deadlines, None, deliveries)


def entries(store: ResultStore) -> list[str]:
    rows: Any = store.client.xrange(outbox_key(store._s))
    return [f[b"id"].decode() for _, f in rows]


def req(i: int, reply: bool = True, tenant: str | None = "acme") -> InferenceRequest:
    topic = "acme.out" if reply else None
    return InferenceRequest(task="embed", model="echo-384", inputs=f"t{i}", tenant=tenant, reply_topic=topic)


def test_a_terminal_write_adds_one_entry_and_a_redelivered_one_none(redis_only):
    store = store_with(redis_only)
    reqs = [req(0), req(1, reply=False), req(2, tenant=None)]
    admit(store, reqs)
    store.start([result(r, ResultStatus.RUNNING, {}) for r in reqs])
    assert entries(store) == []  # running is not terminal
    done = [result(r, ResultStatus.DONE, {"done_ms": now_ms()}) for r in reqs]
    assert store.advance(done) == [True, True, True]
    assert store.advance(done) == [False, False, False]  # a redelivered batch: refused, no entry
    assert entries(store) == [scoped_id("acme", reqs[0].request_id), reqs[2].request_id]


def test_cancel_expire_and_answers_without_admission_feed_the_outbox(redis_only):
    store = store_with(redis_only, results_topic="all")
    cancelled, late = req(0, reply=False), req(1, reply=False)
    admit(store, [cancelled])
    assert store.cancel(cancelled.request_id, "acme").status is ResultStatus.CANCELLED
    admit(store, [late], deadline=now_ms() + 1)
    (expired,) = store.expire_due(now_ms() + 10)
    assert expired.status is ResultStatus.EXPIRED
    # answered without admission (over quota): targets recorded with the write that creates it
    over = req(2, reply=False)
    sid = scoped_id("acme", over.request_id)
    failed = result(over, ResultStatus.FAILED, {"done_ms": now_ms()})
    assert store.advance([failed], deliveries={sid: targets_json(over, store._s)}) == [True]
    assert entries(store) == [scoped_id("acme", r.request_id) for r in (cancelled, late, over)]


def test_a_full_outbox_refuses_and_counts_but_the_result_is_written(redis_only):
    store = store_with(redis_only, outbox_max_entries=2)
    reqs = [req(i) for i in range(4)]
    admit(store, reqs)
    assert store.advance([result(r, ResultStatus.DONE, {"done_ms": now_ms()}) for r in reqs]) == [True] * 4
    assert len(entries(store)) == 2
    assert int(store.client.get(outbox_refused_key(store._s))) == 2
    assert all(store.get(r.request_id, "acme").status is ResultStatus.DONE for r in reqs)


def test_the_reader_reads_takes_over_resumes_and_deletes(redis_only):
    store = store_with(redis_only, delivery_claim_idle_s=0.001)
    reqs = [req(i) for i in range(3)]
    admit(store, reqs)
    store.advance([result(r, ResultStatus.DONE, {"done_ms": now_ms()}) for r in reqs])
    first = Outbox(store.client, store._s, "a")
    first.ensure_group()
    first.ensure_group()  # idempotent
    got = first.read(2, None)
    assert [e.sid for e in got] == [scoped_id("acme", r.request_id) for r in reqs[:2]]
    assert all(
        e.body and b'"status":"done"' in e.body and e.deliver == b'{"topics":["acme.out"]}' for e in got
    )
    assert [e.sid for e in first.read(10, None, mine=True)] == [e.sid for e in got]  # after a restart
    second = Outbox(store.client, store._s, "b")
    # "b" takes "a"'s entries once they have been idle past the (1 ms) claim time
    taken = stack.eventually(lambda: second.reclaim(10), 5, "entries to take over")
    assert isinstance(taken, list)
    assert [e.entry_id for e in taken] == [e.entry_id for e in got]
    second.done([e.entry_id for e in taken])
    assert store.client.xpending(outbox_key(store._s), OUTBOX_GROUP)["pending"] == 0
    assert second.backlog() == (1, 0)  # the third, not read yet


def test_takeover_scans_on_past_the_entries_it_took_before(redis_only):
    """The delivery service leaves a tenant's entries past its share pending (they go idle and are
    taken over again): a scan that always started at the stream's head would find only those, and
    never reach the idle entries after them (a dead process's)."""
    idle_s = 0.2
    store = store_with(redis_only, delivery_claim_idle_s=idle_s)
    reqs = [req(i) for i in range(3)]
    admit(store, reqs)
    store.advance([result(r, ResultStatus.DONE, {"done_ms": now_ms()}) for r in reqs])
    dead = Outbox(store.client, store._s, "dead")
    dead.ensure_group()
    held = [e.entry_id for e in dead.read(3, None)]
    second = Outbox(store.client, store._s, "b")
    taken: list[str] = []
    for _ in range(3):
        time.sleep(idle_s * 1.5)  # every entry idle past the claim time, the one taken last too
        taken += [e.entry_id for e in second.reclaim(1)]  # taken, then left pending
    assert taken == held


def test_a_read_asked_not_to_wait_does_not_wait(redis_only):
    """``block_ms=0`` (a retry is due now) returns at once: Redis reads ``BLOCK 0`` as for ever, and
    the retry would then wait for the next new entry."""
    store = store_with(redis_only)
    reader = Outbox(store.client, store._s, "a")
    reader.ensure_group()
    started = time.monotonic()
    assert reader.read(10, 0) == []
    assert time.monotonic() - started < 1.0
