"""The batcher contract, on a fake clock: deterministic, no sleeps."""

import random
import threading

import pytest

from workers.batcher import Batcher, BatchPolicy, padded_tokens


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += ms / 1000.0


def make(size=4, tokens=1000, wait_ms=10.0):
    clock = Clock()
    return Batcher(BatchPolicy(size, tokens, wait_ms), clock=clock), clock


def test_nothing_before_the_wait_runs_out():
    b, clock = make()
    b.put("a", 5)
    assert b.poll() is None
    clock.advance_ms(9.9)
    assert b.poll() is None
    clock.advance_ms(0.1)
    assert [e.item for e in b.poll()] == ["a"]


def test_flushes_as_soon_as_full_by_count():
    b, _ = make(size=3)
    for x in "abc":
        b.put(x, 5)
    assert [e.item for e in b.poll()] == ["a", "b", "c"]
    assert b.poll() is None and len(b) == 0


def test_flushes_when_full_by_tokens_and_respects_budget():
    b, _ = make(size=100, tokens=30)
    for x in "abcd":
        b.put(x, 10)
    batch = b.poll()
    assert [e.item for e in batch] == ["a", "b", "c"]  # 3 × 10 = 30 fits, a 4th would not
    assert padded_tokens(batch) == 30
    assert len(b) == 1


def test_padded_cost_counts_the_longest_entry():
    b, clock = make(size=100, tokens=40)
    b.put("short", 2)
    b.put("long", 15)
    b.put("short2", 2)
    clock.advance_ms(10)
    first = b.poll()
    assert [e.item for e in first] == ["short", "long"]  # adding short2 → 3 × 15 = 45 > 40
    assert padded_tokens(first) == 30


def test_an_entry_over_the_budget_goes_alone_and_never_loops():
    b, clock = make(size=8, tokens=16)
    b.put("huge", 500)
    b.put("small", 3)
    first = b.poll()
    assert [e.item for e in first] == ["huge"]
    clock.advance_ms(10)
    assert [e.item for e in b.poll()] == ["small"]
    assert b.poll() is None


def test_never_an_empty_batch_and_every_entry_exactly_once():
    rng = random.Random(4)
    b, clock = make(size=7, tokens=64, wait_ms=3)
    put, got = [], []
    for i in range(2_000):
        if rng.random() < 0.6:
            b.put(i, rng.randint(1, 80))
            put.append(i)
        clock.advance_ms(rng.choice([0, 0.5, 1, 4]))
        batch = b.poll()
        if batch is not None:
            assert batch, "empty batch"
            assert len(batch) <= 7
            assert len(batch) == 1 or padded_tokens(batch) <= 64
            got.extend(e.item for e in batch)
    b.close()
    while (batch := b.poll()) is not None:
        got.extend(e.item for e in batch)
    assert got == put  # FIFO, nothing lost, nothing twice


def test_close_releases_what_waits_without_waiting_for_the_timer():
    b, _ = make(wait_ms=10_000)
    b.put("a", 1)
    assert b.poll() is None
    b.close()
    assert [e.item for e in b.poll()] == ["a"]
    with pytest.raises(RuntimeError):
        b.put("b", 1)
    assert b.take(timeout_s=0) is None


def test_take_times_out_on_an_empty_pool():
    b = Batcher(BatchPolicy(4, 100, 5))
    assert b.take(timeout_s=0.01) is None


def test_take_wakes_when_another_thread_fills_the_batch():
    b = Batcher(BatchPolicy(2, 100, 60_000))  # the wait alone would take a minute
    got = []
    t = threading.Thread(target=lambda: got.append(b.take(timeout_s=30)))
    t.start()
    b.put("x", 1)
    b.put("y", 1)
    t.join(30)
    assert [e.item for e in got[0]] == ["x", "y"]


def test_zero_wait_flushes_immediately():
    b, _ = make(size=10, wait_ms=0)
    b.put("a", 1)
    assert [e.item for e in b.poll()] == ["a"]


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        BatchPolicy(0, 10, 1)
    with pytest.raises(ValueError):
        BatchPolicy(1, 10, -1)
