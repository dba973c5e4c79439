"""Engine logic with a fake model and an in-memory store (pure unit tests; the real path is in
tests/integration)."""

from datetime import datetime, timedelta, timezone

import pytest

from schemas.errors import ErrorCode
from schemas.messages import EmbeddingOutput, InferenceRequest, InferenceResult, ResultStatus, Task, Timings
from schemas.observer import BatchStats, Observer
from schemas.work import Source, WorkItem
from tests.fakes import FakeStore
from workers.core.batcher import BatchPolicy
from workers.core.engine import Engine, is_out_of_memory
from workers.core.loop import Outlet


class FakeRunner:
    name, task, version, device = "fake", Task.EMBED, "fake@1", "cpu"

    def __init__(self, memory_tokens=10**9):
        self.forwarded = []
        self.memory_tokens = memory_tokens

    def tokenize(self, texts):
        return [[ord(c) for c in text] for text in texts]

    def forward(self, batch):
        texts = ["".join(map(chr, ids)) for ids in batch]
        self.forwarded.append(texts)
        if any("boom" in t for t in texts):
            raise RuntimeError("model blew up")
        if len(batch) * max(map(len, batch)) > self.memory_tokens:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [[float(len(t))] for t in texts]

    def output(self, row, request):
        return EmbeddingOutput(embedding=row)


def make_engine(runner=None, policy=None):
    runner, store = runner or FakeRunner(), FakeStore()
    return Engine(runner, store, policy or BatchPolicy(64, 10_000, 10_000)), runner, store


def req(inputs, **kw):
    return InferenceRequest(task="embed", model="fake", inputs=inputs, **kw)


def work(request, source=None, **timings):
    return WorkItem(request=request, timings=Timings(**timings), source=source)


class Refused(Outlet):
    def __init__(self):
        self.jobs = []

    def refused(self, job):
        self.jobs.append(job)


def test_outputs_match_inputs_one_to_one_across_requests():
    engine, runner, store = make_engine()
    reqs = [req(["a", "bbb"]), req("cc"), req(["dddd", "e", "ff"])]
    jobs = engine.submit([work(r) for r in reqs])
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
    engine.submit([work(good1), work(bad), work(good2)])
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
    engine.submit([work(late), work(fresh)])
    engine.close()
    assert store.results[late.request_id].status is ResultStatus.EXPIRED
    assert store.results[late.request_id].error.code is ErrorCode.DEADLINE_EXPIRED
    assert store.results[fresh.request_id].status is ResultStatus.DONE
    assert all("late" not in t for batch in runner.forwarded for t in batch)


def test_status_moves_running_then_done():
    engine, _, store = make_engine()
    r = req("x")
    engine.submit([work(r, received_ms=1.0)])
    engine.close()
    assert [s for rid, s in store.writes if rid == r.request_id] == [ResultStatus.RUNNING, ResultStatus.DONE]
    assert store.results[r.request_id].timings.received_ms == 1.0


def test_a_request_cancelled_before_its_batch_never_runs_and_is_not_overwritten():
    engine, runner, store = make_engine()
    gone, kept = req("cancel me"), req("keep me")
    store.results[gone.request_id] = InferenceResult(
        request_id=gone.request_id, status=ResultStatus.CANCELLED
    )
    jobs = engine.submit([work(gone), work(kept)])
    engine.close()
    assert all(j.done.is_set() for j in jobs) and jobs[0].skipped
    assert store.results[gone.request_id].status is ResultStatus.CANCELLED
    assert store.results[kept.request_id].status is ResultStatus.DONE
    assert all("cancel me" not in t for batch in runner.forwarded for t in batch)


def test_out_of_memory_splits_the_batch_and_lowers_the_token_ceiling():
    runner = FakeRunner(memory_tokens=40)  # 8 texts × 10 tokens = 80 padded: too much at once
    engine, _, store = make_engine(runner, BatchPolicy(64, 10_000, 10_000))
    reqs = [req(f"text-{i:05d}") for i in range(8)]
    engine.submit([work(r) for r in reqs])
    engine.close()
    assert all(store.results[r.request_id].status is ResultStatus.DONE for r in reqs)
    assert engine.batcher.policy.max_batch_tokens == 40  # half of the 80 that failed: remembered
    assert max(len(b) for b in runner.forwarded[1:]) <= 4


def test_oom_detection():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(
        RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")
    )
    assert not is_out_of_memory(ValueError("bad input"))


def test_batch_stats_record_padding_waste():
    engine, _, _ = make_engine()
    seen: list[BatchStats] = []

    class Batches(Observer):
        def batch_done(self, stats: BatchStats) -> None:
            seen.append(stats)

    engine.observer = Batches()
    engine.submit([work(req(["ab", "abcdef"]))])
    engine.close()
    (stats,) = seen
    assert (stats.tokens, stats.padded_tokens) == (8, 12)
    assert stats.padding_waste == pytest.approx(1 / 3)
    assert engine.cost.coefficients is None  # one batch: not fitted yet


def test_priority_and_tenant_reach_the_batcher():
    engine, _, _ = make_engine(policy=BatchPolicy(64, 10_000, 60_000))
    engine.submit([work(req("x", priority="high", tenant="acme"))])
    (entry,) = engine.batcher._pool.values()
    assert (entry.priority, entry.tenant) == (0, "acme")
    engine.close()


def test_a_request_started_more_than_max_attempts_is_failed_as_poison_not_run():
    runner, store = FakeRunner(), FakeStore()
    outlet = Refused()
    engine = Engine(runner, store, BatchPolicy(64, 10_000, 10_000), max_attempts=2, outlet=outlet)
    poisoned = outlet.jobs
    bad, good = req("boom"), req("fine")
    store.attempts[bad.request_id] = 2  # two earlier starts whose worker died
    source = Source(topic="t", partition=0, offset=7)
    jobs = engine.submit([work(bad, source), work(good)])
    engine.close()  # flushes the waiting batch
    assert all(job.done.is_set() for job in jobs)
    assert store.results[bad.request_id].status is ResultStatus.FAILED
    assert store.results[bad.request_id].error.code is ErrorCode.POISON_MESSAGE
    assert store.results[good.request_id].status is ResultStatus.DONE
    assert [j.request.request_id for j in poisoned] == [bad.request_id]
    assert poisoned[0].attempts == 3 and poisoned[0].source == source
    assert runner.forwarded == [["fine"]]  # only the good one reached the model


def test_a_store_outage_hands_the_batch_back_instead_of_failing_it():
    import redis

    class DownStore(FakeStore):
        def start(self, results):
            raise redis.ConnectionError("gone")

    store = DownStore()
    engine = Engine(FakeRunner(), store, BatchPolicy(64, 10_000, 10_000))
    jobs = engine.submit([work(req("a"))])
    engine.close()
    assert jobs[0].unwritten and not store.results  # nothing failed: the message goes back


def test_first_deliveries_are_marked_running_while_their_forward_pass_runs():
    import threading

    class SlowStore(FakeStore):
        """Its ``running`` write waits for the forward pass to begin: only an overlapped mark sees it."""

        def __init__(self):
            super().__init__()
            self.forward_began, self.overlapped = threading.Event(), []

        def start(self, results):
            results = list(results)
            if any(r.status is ResultStatus.RUNNING for r in results):
                self.overlapped.append(self.forward_began.wait(5.0))
            return super().start(results)

    class SignallingRunner(FakeRunner):
        def forward(self, batch):
            store.forward_began.set()
            return super().forward(batch)

    store = SlowStore()
    engine = Engine(SignallingRunner(), store, BatchPolicy(64, 10_000, 10_000))
    first = req("first time")
    engine.submit([work(first)], first_delivery=True)
    engine.close()
    assert store.overlapped == [True]
    assert [s for rid, s in store.writes if rid == first.request_id] == [
        ResultStatus.RUNNING,
        ResultStatus.DONE,
    ]


def test_a_first_delivery_cancelled_as_its_batch_starts_is_dropped_not_overwritten():
    engine, _, store = make_engine()
    gone, kept = req("cancel me"), req("keep me")
    store.results[gone.request_id] = InferenceResult(
        request_id=gone.request_id, status=ResultStatus.CANCELLED
    )
    jobs = engine.submit([work(gone), work(kept)], first_delivery=True)
    engine.close()
    assert all(j.done.is_set() for j in jobs) and jobs[0].skipped and not jobs[1].skipped
    assert store.results[gone.request_id].status is ResultStatus.CANCELLED
    assert store.results[kept.request_id].status is ResultStatus.DONE
    assert store.results[kept.request_id].outputs[0].embedding == [7.0]


def test_a_batch_holding_a_redelivered_request_is_marked_before_the_model_runs():
    runner, store = FakeRunner(), FakeStore()
    engine = Engine(runner, store, BatchPolicy(64, 10_000, 10_000), max_attempts=2)
    bad, good = req("boom"), req("fine")
    store.attempts[bad.request_id] = 2  # its worker died on it twice: kombu put the message back
    engine.submit([work(good)], first_delivery=True)
    engine.submit([work(bad)], first_delivery=False)
    engine.close()
    assert store.results[bad.request_id].error.code is ErrorCode.POISON_MESSAGE
    assert store.results[good.request_id].status is ResultStatus.DONE
    assert runner.forwarded == [["fine"]]  # one batch; the poison never reached the model
