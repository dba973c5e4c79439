"""The result cache's refusals (an instance that could evict results, or would not evict) and its
behaviour when the instance is away, with a stub client (the real instance: tests/integration)."""

import pytest
import redis

from schemas.errors import ConfigurationError
from schemas.settings import Settings
from workers.store.cache import ResultCache, check_instance, check_separate

GOOD = {"maxmemory_policy": "allkeys-lru", "maxmemory": 1 << 26, "run_id": "cache"}


@pytest.mark.parametrize(
    "cache_url",
    [
        "redis://127.0.0.1:16379/0",
        "redis://127.0.0.1:16379/7",  # another database of the same instance shares its memory
        "redis://localhost:16379/2",
        "redis://user:secret@127.0.0.1:16379",
    ],
)
def test_the_result_stores_instance_is_refused(cache_url):
    settings = Settings(redis_url="redis://127.0.0.1:16379/0", cache_redis_url=cache_url)
    with pytest.raises(ConfigurationError, match="result store's Redis instance") as refused:
        check_separate(settings)
    assert "secret" not in str(refused.value)  # the URL is shown redacted
    assert "second redis-server" in refused.value.hint


def test_another_instance_is_accepted():
    check_separate(Settings(redis_url="redis://127.0.0.1:16379/0", cache_redis_url="redis://127.0.0.1:16380"))


@pytest.mark.parametrize(
    ("info", "why"),
    [
        ({**GOOD, "maxmemory_policy": "noeviction"}, "noeviction"),
        ({**GOOD, "maxmemory_policy": ""}, "unknown"),
        ({**GOOD, "maxmemory": 0}, "no maxmemory"),
        (GOOD, "same run_id"),
    ],
)
def test_an_instance_that_would_not_evict_or_is_the_results_is_refused(info, why):
    with pytest.raises(ConfigurationError, match=why):
        check_instance(info, results_run_id="cache" if why == "same run_id" else "results")


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "volatile-ttl"])
def test_evicting_instances_are_accepted(policy):
    check_instance({**GOOD, "maxmemory_policy": policy}, results_run_id="results")


class Stub:
    """A Redis client whose INFO answers ``infos`` in turn (an exception is raised)."""

    def __init__(self, *infos):
        self.infos, self.mgets = list(infos), 0

    def info(self, section=None):
        answer = self.infos.pop(0) if len(self.infos) > 1 else self.infos[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def mget(self, keys):
        self.mgets += 1
        return [None] * len(keys)


def test_an_instance_away_at_start_is_checked_at_first_contact(monkeypatch):
    monkeypatch.setattr("workers.store.cache.RETRY_AFTER_S", 0.0)
    stub = Stub(redis.ConnectionError("refused"), GOOD)
    cache = ResultCache(stub, 60, results_run_id="results", verified=False)
    assert cache.get_many(["k"]) is None and stub.mgets == 0  # still away: nothing asked
    assert cache.get_many(["k"]) == [None] and stub.mgets == 1  # checked, then used


def test_an_instance_that_fails_its_late_check_turns_the_cache_off():
    stub = Stub({**GOOD, "maxmemory_policy": "noeviction"})
    cache = ResultCache(stub, 60, verified=False)
    assert cache.get_many(["k"]) is None and cache.put_many({"k": b"v"}) is False
    assert stub.mgets == 0
