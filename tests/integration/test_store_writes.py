"""ADVANCE moves a whole batch in one call, as the per-request calls did: on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from schemas.messages import InferenceRequest, ResultStatus, now_ms
from schemas.naming import done_ids, inflight_key, scoped_id
from schemas.results import queued_result, result, result_json
from schemas.settings import Settings
from tests import stack
from workers.core.runners.packing import embedding_output
from workers.store.store import DoneWatcher, ResultStore, request_digest
from workers.store.writes import ADVANCE_CHUNK


@pytest.fixture(scope="module")
def redis_only(tmp_path_factory) -> Iterator[Settings]:
    with stack.redis_only(Settings(log_ship=False), tmp_path_factory.mktemp("writes")) as settings:
        yield settings


def store_with(settings: Settings) -> ResultStore:
    return ResultStore.from_settings(settings.model_copy(update={"key_prefix": f"w{now_ms():.0f}"}))


def requests(n: int) -> list[InferenceRequest]:
    tenants = ["a", "b", None]
    return [
        InferenceRequest(task="embed", model="echo-384", inputs=f"text {i}", tenant=tenants[i % 3])
        for i in range(n)
    ]


def test_a_batch_longer_than_one_call_starts_writes_and_refuses_like_single_calls(redis_only):
    store = store_with(redis_only)
    reqs = requests(ADVANCE_CHUNK + 44)  # two ADVANCE calls
    store.admit([(request_digest(r), queued_result(r, {})) for r in reqs])
    assert store.client.zcard(inflight_key(store._s)) == len(reqs)
    running = [result(r, ResultStatus.RUNNING, {}) for r in reqs]
    assert store.start(running) == [1] * len(reqs)
    assert store.start(running[:3]) == [2, 2, 2]  # each start counts one
    row = np.linspace(-1, 1, 384, dtype=np.float32)
    done = [
        result(r, ResultStatus.DONE, {"done_ms": now_ms()}, outputs=[embedding_output(row, None)])
        for r in reqs
    ]
    with DoneWatcher(store) as watcher:
        assert store.advance(done) == [True] * len(reqs)
        announced: set[str] = set()
        while len(announced) < len(reqs) and (got := watcher.finished(5.0)):
            announced |= set(got)
    assert announced == {scoped_id(r.tenant, r.request_id) for r in reqs}
    assert store.client.zcard(inflight_key(store._s)) == 0
    for r, d in zip(reqs[:5], done[:5], strict=True):
        body = store.client.hget(store._result_key(r), "body")
        assert body.decode() == result_json(d) == d.model_dump_json()
        assert store.get(r.request_id, r.tenant).outputs[0].embedding == [float(x) for x in row]
    # a terminal result is never overwritten; a request never admitted is written once (absent only)
    assert store.advance(done[:2]) == [False, False]
    assert store.start(running[:1]) == [0]
    fresh = requests(2)
    failed = [result(r, ResultStatus.FAILED, {"done_ms": now_ms()}) for r in fresh]
    assert store.advance(failed + done[:1], only_if_absent=True) == [True, True, False]
    assert store.advance([]) == []


def test_a_batch_is_announced_in_one_message_and_old_or_malformed_messages_are_read_safely(redis_only):
    store = store_with(redis_only)
    reqs = requests(5)
    store.admit([(request_digest(r), queued_result(r, {})) for r in reqs])
    done = [result(r, ResultStatus.DONE, {"done_ms": now_ms()}) for r in reqs]
    raw = store.client.pubsub(ignore_subscribe_messages=True)
    raw.subscribe(store.channel)
    raw.get_message(timeout=1.0)
    with DoneWatcher(store) as watcher:
        assert store.advance(done) == [True] * 5
        message = raw.get_message(timeout=5.0)
        assert raw.get_message(timeout=0.2) is None  # one PUBLISH for the batch
        sids = [scoped_id(r.tenant, r.request_id) for r in reqs]
        assert message is not None and done_ids(message["data"]) == sids
        store.client.publish(store.channel, sids[0])  # a writer from before batching
        store.client.publish(store.channel, b"\xff\x00  ")  # garbage on the channel: no crash
        got: list[str] = []
        while len(got) < 7 and (part := watcher.finished(5.0)):
            got += part
    raw.close()
    assert got == [*sids, sids[0], "\ufffd\x00"]
