"""Engine logic with a fake model and an in-memory store (pure unit tests; the real path is in
tests/integration)."""

from datetime import datetime, timedelta, timezone

from schemas.errors import ErrorCode
from schemas.messages import EmbeddingOutput, InferenceRequest, ResultStatus, Task
from workers.batcher import BatchPolicy
from workers.engine import Engine


class FakeRunner:
    name, task, version, device = "fake", Task.EMBED, "fake@1", "cpu"

    def __init__(self):
        self.forwarded = []

    def tokenize(self, text):
        return [ord(c) for c in text]

    def forward(self, batch):
        texts = ["".join(map(chr, ids)) for ids in batch]
        self.forwarded.append(texts)
        if any("boom" in t for t in texts):
            raise RuntimeError("model blew up")
        return [[float(len(t))] for t in texts]

    def output(self, row, request):
        return EmbeddingOutput(embedding=row)


class MemoryStore:
    def __init__(self):
        self.results = {}
        self.writes = []

    def advance(self, results, *, only_if_absent=False):
        for r in results:
            self.writes.append((r.request_id, r.status))
            self.results[r.request_id] = r
        return [True] * len(results)


def make_engine():
    runner, store = FakeRunner(), MemoryStore()
    return Engine(runner, store, BatchPolicy(64, 10_000, 10_000)), runner, store


def req(inputs, **kw):
    return InferenceRequest(task="embed", model="fake", inputs=inputs, **kw)


def test_outputs_match_inputs_one_to_one_across_requests():
    engine, runner, store = make_engine()
    reqs = [req(["a", "bbb"]), req("cc"), req(["dddd", "e", "ff"])]
    jobs = engine.submit([(r, {}) for r in reqs])
    engine.close()
    assert all(j.done.is_set() for j in jobs)
    assert [o.embedding[0] for o in store.results[reqs[0].request_id].outputs] == [1.0, 3.0]
    assert [o.embedding[0] for o in store.results[reqs[2].request_id].outputs] == [4.0, 1.0, 2.0]
    assert len(runner.forwarded) == 1  # one forward pass served all three requests
    res = store.results[reqs[1].request_id]
    assert res.status is ResultStatus.DONE and res.model_version == "fake@1"
    assert res.timings.batch_size == 6 and res.timings.batch_start_ms <= res.timings.done_ms


def test_a_failing_input_fails_only_its_own_request():
    engine, _, store = make_engine()
    good1, bad, good2 = req("fine"), req(["ok", "boom"]), req("also fine")
    engine.submit([(good1, {}), (bad, {}), (good2, {})])
    engine.close()
    assert store.results[good1.request_id].status is ResultStatus.DONE
    assert store.results[good2.request_id].status is ResultStatus.DONE
    failed = store.results[bad.request_id]
    assert failed.status is ResultStatus.FAILED and failed.error.code is ErrorCode.MODEL_ERROR
    assert failed.outputs is None


def test_expired_requests_never_reach_the_model():
    engine, runner, store = make_engine()
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    late, fresh = req("late", deadline=past), req("fresh")
    engine.submit([(late, {}), (fresh, {})])
    engine.close()
    assert store.results[late.request_id].status is ResultStatus.EXPIRED
    assert store.results[late.request_id].error.code is ErrorCode.DEADLINE_EXPIRED
    assert store.results[fresh.request_id].status is ResultStatus.DONE
    assert all("late" not in t for batch in runner.forwarded for t in batch)


def test_status_moves_running_then_done():
    engine, _, store = make_engine()
    r = req("x")
    engine.submit([(r, {"received_ms": 1.0})])
    engine.close()
    assert [s for rid, s in store.writes if rid == r.request_id] == [ResultStatus.RUNNING, ResultStatus.DONE]
    assert store.results[r.request_id].timings.received_ms == 1.0
