"""Which models count as served, on a fake clock and a fake presence set."""

from __future__ import annotations

from schemas.catalog import CATALOG
from schemas.settings import Settings
from workers.intake.backpressure import Backpressure
from workers.store.presence import CACHE_S, ServedModels


class FakePresence:
    """The one Redis call ServedModels makes: ZRANGEBYSCORE presence min +inf WITHSCORES."""

    def __init__(self) -> None:
        self.members: dict[str, float] = {}
        self.reads = 0

    def zrangebyscore(self, key, low, high, withscores=False):
        self.reads += 1
        return [(m.encode(), s) for m, s in self.members.items() if s >= low]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(grace_s: float = 30.0):
    presence, clock = FakePresence(), Clock(1_000.0)
    served = ServedModels(presence, Settings(unserved_model_grace_s=grace_s), clock=clock)  # type: ignore[arg-type]
    return presence, clock, served


def test_every_catalogue_model_is_available_while_the_reader_is_younger_than_the_grace():
    _, clock, served = make()
    assert served.available() == frozenset(CATALOG)
    assert served.served() == frozenset()
    clock.t += 31
    assert served.available() == frozenset()


def test_a_model_stays_available_for_the_grace_after_its_last_worker_lapsed():
    presence, clock, served = make()
    clock.t += 100
    presence.members["all-MiniLM-L6-v2|w1"] = clock.t * 1000 + 15_000  # live for 15 s
    assert served.served() == served.available() == {"all-MiniLM-L6-v2"}
    clock.t += 20  # lapsed 5 s ago: no longer served, still within the grace
    assert served.served() == frozenset() and served.available() == {"all-MiniLM-L6-v2"}
    clock.t += 30  # 35 s after it lapsed
    assert served.available() == frozenset()


def test_readings_are_cached():
    presence, clock, served = make(grace_s=0)
    for _ in range(50):
        served.served()
        clock.t += CACHE_S / 100
    assert presence.reads == 1


def test_backpressure_counts_only_the_models_it_is_told_are_served():
    counts = {"served": 3, "unserved": 100}
    counted = {"served"}
    bp = Backpressure(
        lambda ms: {m: counts[m] for m in ms}, ["served", "unserved"], 100, 0.8, counted=lambda: counted
    )
    assert bp.room(now_s=1.0) == 97 and not bp.paused  # the unserved model's 100 do not pause anyone
    counted.add("unserved")
    assert bp.room(now_s=2.0) == 0 and bp.paused and bp.saturated == ["unserved"]
    counted.clear()
    assert bp.room(now_s=3.0) == 100 and not bp.paused


class FakePresenceAndRollouts(FakePresence):
    """Also the reads of every stored member (ZRANGE) and of the models' rollouts (HGETALL)."""

    def __init__(self, rollouts: dict[str, dict[str, str]]) -> None:
        super().__init__()
        self.rollouts = rollouts

    def zrange(self, key, start, end):
        return [m.encode() for m in self.members]

    def pipeline(self, transaction=False):
        client, asked = self, []

        class Pipe:
            def hgetall(self, key):
                asked.append(key.rpartition(":")[2])

            def execute(self):
                return [client.rollouts.get(model, {}) for model in asked]

        return Pipe()


def test_while_young_only_versions_a_worker_or_a_rollout_names_are_worth_admitting():
    """A young intake admits every catalogue model (its workers may be loading). It used to admit
    any version too: a tenant pinning made-up versions in the minute after an intake started had
    each sent to a Celery queue of its own that no worker would ever read, where the messages
    stayed for good. A version is worth waiting for only when an advertisement (live or lapsed)
    or a model's rollout names it."""
    model = "all-MiniLM-L6-v2"
    presence = FakePresenceAndRollouts({model: {"current": "v2", "canary": "v3", "canary_share_bp": "10"}})
    presence.members[f"{model}@int8|w1"] = 1.0  # lapsed long ago, not yet forgotten
    served = ServedModels(presence, Settings(unserved_model_grace_s=30.0), clock=Clock(1_000.0))
    assert served.is_available(model)
    assert all(served.is_available(f"{model}@{v}") for v in ("int8", "v2", "v3"))
    assert not served.is_available(f"{model}@made-up-1")
    assert not served.is_available("not-a-model@v2")
