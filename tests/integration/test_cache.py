"""The result cache on the session's real stack (issue 20): its own redis-server (started by the
stack, ``cache_redis_url`` in tests/stack.py), the worker's hit path, list inputs sharing entries,
per-tenant scoping, TTLs and the memory bound, and a cache that goes away.

The key builder's rules (which parameters change a key) are unit-tested in
tests/unit/workers/core/test_cache.py; here each behaviour is shown once through the real pipeline.
"""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
import redis

from ops.stack import Stack
from ops.stack.env import settings_env
from schemas import results
from schemas.connections import redis_client
from schemas.errors import ConfigurationError
from schemas.messages import InferenceRequest, ResultStatus
from schemas.settings import Settings
from schemas.work import WorkItem
from tests.integration.test_observability import scrape, total
from tests.stack import eventually
from workers.core.batcher import BatchPolicy
from workers.core.cache import CacheKeys
from workers.core.engine import Engine
from workers.core.runners.echo import EchoEncoder
from workers.store.cache import ResultCache, check_instance
from workers.store.store import ResultStore

MODEL = "all-MiniLM-L6-v2"


def unique(what: str) -> str:
    return f"{what} {secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def cache_redis(stack: Stack, settings: Settings) -> redis.Redis:
    return redis_client(settings, settings.cache_redis_url, ride_out=False, socket_timeout=2.0)


def test_the_same_text_again_skips_the_model_and_says_it_was_cached(client, settings):
    text = unique("the cache's hit path")
    before = scrape(settings)
    first = client.wait(client.submit("embed", MODEL, text), timeout_s=60)
    second = client.wait(client.submit("embed", MODEL, text), timeout_s=60)
    assert first.status is second.status is ResultStatus.DONE
    assert first.cached is None and second.cached == [0]
    assert second.outputs[0].floats() == first.outputs[0].floats()
    assert second.model_version == first.model_version

    def counted() -> dict[str, float] | None:
        now = scrape(settings)
        hits = total(now, "inferq_cache_hits_total", model=MODEL) - total(
            before, "inferq_cache_hits_total", model=MODEL
        )
        return now if hits == 1 else None

    after = eventually(counted, 20, "the exporter to count the hit")
    assert isinstance(after, dict)
    computed = total(after, "inferq_batch_size_sum", model=MODEL) - total(
        before, "inferq_batch_size_sum", model=MODEL
    )
    assert computed == 1, "the second request reached the model"
    assert (
        total(after, "inferq_cache_misses_total", model=MODEL)
        - total(before, "inferq_cache_misses_total", model=MODEL)
        == 1
    )
    assert total(after, "inferq_cache_used_bytes") > 0


def test_list_inputs_share_entries_and_parameters_that_change_the_output_do_not(client):
    a, b, c = unique("list a"), unique("list b"), unique("list c")
    first = client.wait(client.submit("embed", MODEL, [a, b]), timeout_s=60)
    second = client.wait(client.submit("embed", MODEL, [b, c, a]), timeout_s=60)
    assert first.cached is None and second.cached == [0, 2]
    assert second.outputs[0].floats() == first.outputs[1].floats()
    assert second.outputs[2].floats() == first.outputs[0].floats()
    compact = client.wait(client.submit("embed", MODEL, a, encoding="base64"), timeout_s=60)
    assert compact.cached is None  # another wire form: its own entry
    intent = [
        client.wait(client.submit("classify", "minilm-intent", a, top_k=k), timeout_s=60) for k in (3, 3, 4)
    ]
    assert [r.cached for r in intent] == [None, [0], None]
    assert intent[1].outputs == intent[0].outputs


def test_entries_are_per_tenant(client):
    text = unique("tenant scoping")
    mine = client.wait(client.submit("embed", MODEL, text, tenant="cache-a"), timeout_s=60)
    theirs = client.wait(client.submit("embed", MODEL, text, tenant="cache-b"), timeout_s=60)
    again = client.wait(client.submit("embed", MODEL, text, tenant="cache-a"), timeout_s=60)
    assert mine.cached is None and theirs.cached is None  # b never reads a's entry
    assert again.cached == [0]
    assert theirs.outputs[0].floats() == mine.outputs[0].floats()


def test_a_greedy_generation_again_comes_from_the_cache_and_a_sampled_one_never(client):
    prompt = unique("the cache remembers")
    short = {"max_new_tokens": 6}
    greedy = [
        client.wait(client.submit("generate", "tiny-lm", prompt, generation=short), timeout_s=60)
        for _ in range(2)
    ]
    assert greedy[0].cached is None and greedy[1].cached == [0]
    assert greedy[1].outputs == greedy[0].outputs and greedy[0].status is ResultStatus.DONE
    sampled = {"max_new_tokens": 6, "temperature": 0.9}
    again = [
        client.wait(client.submit("generate", "tiny-lm", prompt, generation=sampled), timeout_s=60)
        for _ in range(2)
    ]
    assert [r.cached for r in again] == [None, None]


def echo_engine(settings: Settings, store: ResultStore, shared: bool) -> Engine:
    """An engine in this process on the instant echo model, with the stack's store and cache."""
    s = settings.model_copy(update={"cache_shared": shared})
    cache = ResultCache.from_settings(s, store.client)
    runner = EchoEncoder(s.model_max_length_tokens)
    return Engine(
        runner, store, BatchPolicy(64, 10_000, 0), cache=cache, cache_keys=CacheKeys(s, runner.version)
    )


def serve(engine: Engine, store: ResultStore, text: str, tenant: str):
    request = InferenceRequest(task="embed", model="echo-384", inputs=text, tenant=tenant)
    store.admit([(secrets.token_hex(8), results.queued_result(request, {}))])
    (job,) = engine.submit([WorkItem(request=request)])
    assert job.done.wait(10)
    # the computed output goes to the cache after the result is written (off the request's path)
    cache, keys = engine.cache, engine.cache_keys
    assert cache is not None and keys is not None
    key = str(keys.keys(request, engine.runner.tokenize([text]))[0])
    eventually(lambda: (cache.get_many([key]) or [None])[0], 5, "the entry to be written")
    stored = store.get(request.request_id, tenant)
    assert stored is not None and stored.status is ResultStatus.DONE
    return stored


def test_a_shared_cache_answers_every_tenant(stack, settings):
    store = ResultStore.from_settings(settings)
    words = " ".join(["shared"] * (secrets.randbelow(60) + 150))  # echo's input is its word count
    scoped, shared = echo_engine(settings, store, False), echo_engine(settings, store, True)
    try:
        assert serve(scoped, store, words, "echo-a").cached is None
        assert serve(scoped, store, words, "echo-b").cached is None  # scoped: b misses a's entry
        assert serve(shared, store, words, "echo-a").cached is None
        assert serve(shared, store, words, "echo-b").cached == [0]  # shared: b reads a's entry
    finally:
        scoped.close()
        shared.close()


def test_a_cache_that_could_evict_results_is_refused(stack, settings):
    same_db = settings.model_copy(update={"cache_redis_url": settings.redis_url.rsplit("/", 1)[0] + "/5"})
    with pytest.raises(ConfigurationError, match="result store's Redis") as refused:
        ResultCache.from_settings(same_db)
    assert "second redis-server" in refused.value.hint
    store = ResultStore.from_settings(settings)
    alias = settings.redis_url.replace("127.0.0.1", "0.0.0.0")  # the same instance by another name
    with pytest.raises(ConfigurationError, match="run_id"):
        ResultCache.from_settings(settings.model_copy(update={"cache_redis_url": alias}), store.client)
    with pytest.raises(ConfigurationError, match="noeviction"):
        check_instance(store.client.info())  # the results' own policy: it never evicts


def test_a_worker_pointed_at_the_results_instance_refuses_to_start(stack, settings, tmp_path):
    bad = settings.model_copy(
        update={"cache_redis_url": settings.redis_url.rsplit("/", 1)[0] + "/3", "state_dir": tmp_path}
    )
    env = {**stack.env, **settings_env(bad), "INFERQ_LOG_SHIP": "false"}
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_adapter", "worker", "--pool", "threads"]
    proc = subprocess.run(
        [*argv, "-n", f"refused-{secrets.token_hex(3)}@test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 78, proc.stderr[-2000:]  # EX_CONFIG: no restart loop, no message taken
    assert "worker cannot start" in proc.stderr and "second redis-server" in proc.stderr


def test_every_entry_has_a_ttl_and_eviction_stays_in_the_cache(client, settings, cache_redis):
    store = ResultStore.from_settings(settings)
    kept = client.wait(client.submit("embed", MODEL, unique("kept through eviction")), timeout_s=60)
    keys = list(cache_redis.scan_iter(f"{settings.key_prefix}:cache:*", count=1000))
    assert keys
    ttls = [cache_redis.ttl(k) for k in keys]
    assert all(0 < t <= settings.cache_ttl_s for t in ttls), ttls
    # fill the cache past its bound: its own LRU evicts, the results' instance loses nothing
    evicted_before = int(store.client.info("stats")["evicted_keys"])
    chunk = b"x" * 8192
    with cache_redis.pipeline(transaction=False) as pipe:
        for i in range(2 * settings.cache_max_bytes // len(chunk)):
            pipe.set(f"{settings.key_prefix}:cache:filler:{i}", chunk, ex=60)
        pipe.execute()
    memory = cache_redis.info("memory")
    assert int(memory["used_memory"]) <= settings.cache_max_bytes * 1.1
    assert int(cache_redis.info("stats")["evicted_keys"]) > 0
    assert int(store.client.info("stats")["evicted_keys"]) == evicted_before
    assert client.result(kept.request_id) == kept
    again = client.wait(client.submit("embed", MODEL, unique("after eviction")), timeout_s=60)
    assert again.status is ResultStatus.DONE


def test_requests_are_answered_while_the_cache_is_down(stack, client, settings):
    text = unique("cache down")
    assert client.wait(client.submit("embed", MODEL, text), timeout_s=60).status is ResultStatus.DONE
    stack.kill("cache")
    eventually(lambda: stack.pid("cache") is None, 10, "the cache to stop")
    try:
        ids = [client.submit("embed", MODEL, t) for t in (text, unique("cache down, new"))]
        answered = client.wait_all(ids, timeout_s=60)
        assert all(r.status is ResultStatus.DONE and r.cached is None for r in answered.values())
    finally:
        stack.up(only=["cache"], settle_s=0.2)
