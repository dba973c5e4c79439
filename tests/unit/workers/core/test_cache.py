"""The result cache's keys, values and the engine's use of it, with a fake model and a dict for
the cache (the real instance, its bounds and scoping are in tests/integration/test_cache.py)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from schemas.messages import (
    ClassifyOutput,
    EmbeddingEncoding,
    EmbeddingOutput,
    GenerationOutput,
    InferenceRequest,
    LabelScore,
    ResultStatus,
)
from schemas.observer import Observer
from schemas.results import result_json
from schemas.settings import Settings
from tests.fakes import FakeCache, FakeStore
from tests.unit.workers.core.test_engine import FakeRunner, req, work
from workers.core.batcher import BatchPolicy
from workers.core.cache import CacheKeys, decode_output, encode_output
from workers.core.engine import Engine
from workers.core.runners.packing import embedding_output

SETTINGS = Settings()
IDS = [101, 7592, 2088, 102]


def key_of(request: InferenceRequest, version: str = "m@1", shared: bool = False, ids=IDS) -> str | None:
    keys = CacheKeys(SETTINGS.model_copy(update={"cache_shared": shared}), version)
    return keys.keys(request, [ids])[0]


def embed(**kw) -> InferenceRequest:
    return InferenceRequest(task="embed", model="m", inputs="hello", **kw)


def test_what_changes_an_output_changes_its_key():
    base = key_of(embed())
    assert base is not None and base.startswith(f"{SETTINGS.key_prefix}:cache:t:")
    assert key_of(embed(), version="m@2") != base  # another model version
    assert key_of(embed(), ids=[101, 7592, 102]) != base  # another input
    assert key_of(embed(encoding=EmbeddingEncoding.BASE64)) != base  # another wire form is stored
    assert key_of(embed(encoding=EmbeddingEncoding.BASE64)) != key_of(embed(encoding="base64-f16"))
    classify = InferenceRequest(task="classify", model="m", inputs="hello")
    assert key_of(classify) != base  # another task
    assert key_of(classify) != key_of(classify.model_copy(update={"top_k": 3}))


def test_what_does_not_change_an_output_shares_its_key():
    base = key_of(embed())
    deadline = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert key_of(embed(encoding=EmbeddingEncoding.FLOAT)) == base  # float is the default form
    assert key_of(embed(priority="high", deadline=deadline, reply_topic="replies")) == base
    assert key_of(InferenceRequest(task="embed", model="m", inputs=["other", "texts"])) == base  # same ids


def test_keys_are_per_tenant_unless_shared():
    a, b = embed(tenant="a"), embed(tenant="b")
    assert key_of(a) != key_of(b) and key_of(a) != key_of(embed())
    assert key_of(a, shared=True) == key_of(b, shared=True) == key_of(embed(), shared=True)
    assert ":cache:shared:" in str(key_of(a, shared=True))


def generate(**params) -> InferenceRequest:
    return InferenceRequest(task="generate", model="m", inputs="hi", generation=params or None)


def test_generation_is_cached_only_when_deterministic():
    assert key_of(generate()) is not None  # greedy by default
    assert key_of(generate(temperature=0.8)) is None  # sampled: never cached
    seeded = key_of(generate(temperature=0.8, seed=7))
    assert seeded is not None and seeded != key_of(generate(temperature=0.8, seed=8))
    assert seeded != key_of(generate(temperature=0.8, seed=7, top_p=0.9))  # every parameter counts
    assert key_of(generate(max_new_tokens=5)) != key_of(generate(max_new_tokens=6))
    assert key_of(generate(stream_to_kafka=True)) == key_of(generate())  # only how it is delivered


@pytest.mark.parametrize(
    "output",
    [
        embedding_output(np.array([0.5, -1e-7, 3.0], dtype=np.float32), None),
        embedding_output(np.array([0.5, -0.25], dtype=np.float32), EmbeddingEncoding.BASE64),
        embedding_output(np.array([0.5, -0.25], dtype=np.float32), EmbeddingEncoding.BASE64_F16),
        ClassifyOutput(labels=[LabelScore(label="x", score=0.75)]),
        GenerationOutput(text="hi there", tokens=2, finish_reason="eos"),
    ],
)
def test_a_cached_output_reads_back_as_written(output):
    back = decode_output(encode_output(output))
    assert back == output or back.model_dump_json() == output.model_dump_json()
    assert type(back.embedding if isinstance(back, EmbeddingOutput) else back) is type(
        output.embedding if isinstance(output, EmbeddingOutput) else output
    )


def test_an_unreadable_cached_value_is_a_miss():
    assert decode_output(b"jnot json") is None
    assert decode_output(b"bnot-an-encoding\0abc") is None
    assert decode_output(b"") is None


class Counts(Observer):
    def __init__(self):
        self.calls = []

    def cache_used(self, model, hits, misses, errors):
        self.calls.append((hits, misses, errors))


def cached_engine(cache, wait_ms=10_000):
    runner, store, seen = FakeRunner(), FakeStore(), Counts()
    engine = Engine(
        runner,
        store,
        BatchPolicy(64, 10_000, wait_ms),
        observer=seen,
        cache=cache,
        cache_keys=CacheKeys(SETTINGS, runner.version),
    )
    return engine, runner, store, seen


def test_a_hit_skips_the_model_and_the_result_says_so():
    cache = FakeCache()
    engine, runner, store, seen = cached_engine(cache, wait_ms=0)
    first = req(["abc", "de"])
    assert engine.submit([work(first)])[0].done.wait(5)
    again = req(["de", "xyz", "abc"])
    assert engine.submit([work(again)])[0].done.wait(5)
    engine.close()
    assert runner.forwarded == [["abc", "de"], ["xyz"]]  # only the new text reached the model
    one, two = store.results[first.request_id], store.results[again.request_id]
    assert one.cached is None and two.cached == [0, 2]
    assert [o.embedding for o in two.outputs] == [[2.0], [3.0], [3.0]]
    assert '"cached":[0,2]' in result_json(two) and '"cached"' not in result_json(one)
    # hits counted where found (on arrival here), misses where computed
    assert [sum(c[i] for c in seen.calls) for i in range(3)] == [2, 3, 0]
    assert cache.reads == 4 and cache.writes == 2  # one lookup per message and per batch
    whole = req(["de", "abc"])
    jobs = engine.submit([work(whole)])  # answered on arrival, on this thread: the engine is closed
    assert jobs[0].done.is_set() and runner.forwarded == [["abc", "de"], ["xyz"]]
    three = store.results[whole.request_id]
    assert three.status is ResultStatus.DONE and three.cached == [0, 1] and three.timings.batch_size == 0
    assert [o.embedding for o in three.outputs] == [[2.0], [3.0]]


def test_identical_inputs_waiting_together_are_computed_once():
    cache = FakeCache()
    engine, runner, store, _ = cached_engine(cache)
    reqs = [req(["same", "other"]), req("same"), req("same", tenant="b")]
    engine.submit([work(r) for r in reqs])
    engine.close()
    assert sorted(runner.forwarded[0]) == ["other", "same", "same"]  # once per tenant
    assert all(store.results[r.request_id].outputs[0].embedding == [4.0] for r in reqs)
    assert all(store.results[r.request_id].cached is None for r in reqs)  # computed, not read back


def test_a_cache_that_is_down_fails_no_request():
    cache = FakeCache()
    cache.down = True
    engine, runner, store, seen = cached_engine(cache)
    r = req(["abc", "de"])
    engine.submit([work(r)])
    engine.close()
    assert store.results[r.request_id].status is ResultStatus.DONE
    assert runner.forwarded == [["abc", "de"]]
    assert seen.calls == [(0, 2, 2)]  # the lookup and the write-back failed, both counted


def test_failed_inputs_are_not_cached():
    cache = FakeCache()
    engine, _, store, _ = cached_engine(cache)
    bad = req(["fine", "boom"])
    engine.submit([work(bad)])
    engine.close()
    assert store.results[bad.request_id].status is ResultStatus.FAILED
    assert len(cache.entries) == 1  # "fine" (computed in the isolated retry) only


def test_a_seeded_requests_inputs_are_keyed_by_their_own_seed():
    keys = CacheKeys(SETTINGS, "m@1")
    seeded = InferenceRequest(
        task="generate", model="m", inputs=["hi", "hi"], generation={"temperature": 0.8, "seed": 7}
    )
    first, second = keys.keys(seeded, [IDS, IDS])
    assert first != second  # input 1 samples with seed 8
    alone = InferenceRequest(
        task="generate", model="m", inputs="hi", generation={"temperature": 0.8, "seed": 8}
    )
    assert keys.keys(alone, [IDS]) == [second]
    greedy = InferenceRequest(task="generate", model="m", inputs=["hi", "hi"], generation={"seed": 7})
    assert len(set(keys.keys(greedy, [IDS, IDS]))) == 1  # greedy: no seed plays a part
    assert keys.keys(greedy, [IDS]) == [key_of(generate(), version="m@1")]  # greedy with any seed
    assert keys.keys(greedy, [IDS], ["budget=5"]) != keys.keys(greedy, [IDS], ["budget=6"])


def test_a_generation_hit_never_reaches_the_model_and_a_sampled_one_is_never_cached():
    from tests.tiny_models import tiny_causal_lm
    from workers.core.decoder import Decoder
    from workers.core.sequences import DecodePolicy

    lm, cache, store, seen = tiny_causal_lm(), FakeCache(), FakeStore(), Counts()
    d = Decoder(
        lm,
        store,
        DecodePolicy(stream_interval_ms=0.0),
        observer=seen,
        cache=cache,
        cache_keys=CacheKeys(SETTINGS, lm.version),
    )

    def run(**params):
        r = InferenceRequest(task="generate", model="tiny-lm", inputs="reset my password", generation=params)
        (job,) = d.submit([work(r)])
        assert job.done.wait(60)
        return store.results[r.request_id]

    first, again = run(max_new_tokens=6), run(max_new_tokens=6)
    shorter = run(max_new_tokens=4)
    sampled = [run(max_new_tokens=6, temperature=0.9) for _ in range(2)]
    d.close()
    assert first.cached is None and again.cached == [0] and shorter.cached is None
    assert again.outputs == first.outputs and first.outputs[0].tokens == 6
    assert [r.cached for r in sampled] == [None, None]
    assert len(cache.entries) == 2  # the two greedy budgets; sampled outputs are never stored
    assert seen.calls.count((1, 0, 0)) == 1  # the one hit


def test_a_request_answered_whole_on_arrival_still_expires_and_is_marked_started():
    cache = FakeCache()
    engine, runner, store, _ = cached_engine(cache, wait_ms=0)
    assert engine.submit([work(req("abc"))])[0].done.wait(5)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    late, fine = req("abc", deadline=past), req("abc")
    jobs = engine.submit([work(late), work(fine)])
    engine.close()
    assert all(j.done.is_set() for j in jobs) and runner.forwarded == [["abc"]]
    assert store.results[late.request_id].status is ResultStatus.EXPIRED
    assert store.results[fine.request_id].status is ResultStatus.DONE
    assert (fine.request_id, ResultStatus.RUNNING) in store.writes  # started as any request is
