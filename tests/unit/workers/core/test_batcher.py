"""The batcher contract, on a fake clock: deterministic, no sleeps."""

import math
import random
import threading
from collections import Counter

import pytest

from workers.core.batcher import (
    Batcher,
    BatchPolicy,
    cheapest_prefix,
    fair_quota,
    later_cost,
    overhead_in_tokens,
    padded_tokens,
    padding_waste,
)


def lengths(batch):
    return [e.tokens for e in batch]


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
    assert padded_tokens(lengths(batch)) == 30
    assert len(b) == 1


def test_padded_cost_counts_the_longest_entry_and_like_lengths_go_together():
    b, clock = make(size=100, tokens=40)
    b.put("short", 2)
    b.put("long", 15)
    b.put("short2", 2)
    clock.advance_ms(10)
    first = b.poll()
    assert [e.item for e in first] == ["short", "short2"]  # 3 × 15 = 45 > 40: long waits
    assert padded_tokens(lengths(first)) == 4
    assert [e.item for e in b.poll()] == ["long"]


def test_padding_helpers():
    assert padded_tokens([3, 5]) == 10 and padded_tokens([]) == 0
    assert padding_waste([5, 5]) == 0.0 and padding_waste([1, 3]) == pytest.approx(1 / 3)


def test_length_bucketing_keeps_padding_small_in_a_deep_pool():
    rng = random.Random(7)
    b, _ = make(size=16, tokens=100_000, wait_ms=0)
    sizes = [rng.randint(5, 120) for _ in range(256)]
    for i, n in enumerate(sizes):
        b.put(i, n)  # nothing is taken while the pool fills: the model was busy
    b.close()
    waste, fifo_waste = [], []
    while (batch := b.poll()) is not None:
        waste.append(padding_waste(lengths(batch)))
    for i in range(0, len(sizes), 16):
        fifo_waste.append(padding_waste(sizes[i : i + 16]))
    assert sum(waste) / len(waste) < 0.25 * sum(fifo_waste) / len(fifo_waste)


def test_an_anchor_is_the_oldest_so_nothing_starves():
    b, _ = make(size=2, tokens=1000, wait_ms=0)
    b.put("old-long", 90)
    for i in range(50):
        b.put(f"short{i}", 3)
    assert "old-long" in [e.item for e in b.poll()]


def test_an_entry_over_the_budget_goes_alone_and_never_loops():
    b, clock = make(size=8, tokens=16)
    b.put("huge", 500)
    b.put("small", 3)
    first = b.poll()
    assert [e.item for e in first] == ["huge"]
    clock.advance_ms(10)
    assert [e.item for e in b.poll()] == ["small"]
    assert b.poll() is None


def test_a_budget_smaller_than_every_input_still_drains_one_by_one():
    b, _ = make(size=8, tokens=4)
    for i in range(5):
        b.put(i, 100 + i)
    b.close()
    got = []
    for _ in range(10):  # bounded: a loop that never releases would fail here, not hang
        batch = b.poll()
        if batch is None:
            break
        assert len(batch) == 1
        got += [e.item for e in batch]
    assert sorted(got) == [0, 1, 2, 3, 4]


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
            assert len(batch) == 1 or padded_tokens(lengths(batch)) <= 64
            got.extend(e.item for e in batch)
    b.close()
    while (batch := b.poll()) is not None:
        got.extend(e.item for e in batch)
    assert sorted(got) == put and len(got) == len(set(got))  # nothing lost, nothing twice


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


# -- priorities and fairness ---------------------------------------------------------------------
def test_high_priority_goes_first_even_when_younger():
    b, _ = make(size=2, tokens=1000, wait_ms=0)
    b.put("n1", 5, priority=1)
    b.put("n2", 5, priority=1)
    b.put("h1", 5, priority=0)
    first = b.poll()
    assert [e.item for e in first] == ["h1", "n1"]  # the spare slot goes to the next class


def test_low_priority_ages_into_a_higher_class():
    clock = Clock()
    b = Batcher(BatchPolicy(1, 1000, 0, priority_aging_ms=100), clock=clock)
    b.put("low", 5, priority=2)
    clock.advance_ms(250)  # two classes up: now competes as high
    b.put("normal", 5, priority=1)
    assert [e.item for e in b.poll()] == ["low"]


def test_fair_quota_is_max_min():
    assert fair_quota(Counter(a=100, b=4), 8) == {"a": 4, "b": 4}
    assert fair_quota(Counter(a=100, b=1), 8) == {"a": 7, "b": 1}
    assert fair_quota(Counter(a=3, b=3, c=3), 6) == {"a": 2, "b": 2, "c": 2}
    assert sum(fair_quota(Counter(a=5, b=5, c=5), 7).values()) == 7


def test_a_flooding_tenant_does_not_crowd_out_a_small_one():
    b, _ = make(size=8, tokens=100_000, wait_ms=0)
    for i in range(100):
        b.put(("big", i), 10, tenant="big")
    for i in range(3):
        b.put(("small", i), 10, tenant="small")
    first = b.poll()
    assert Counter(e.tenant for e in first) == {"big": 5, "small": 3}


def test_the_least_served_tenant_anchors_the_next_batch():
    b, _ = make(size=2, tokens=100_000, wait_ms=0)
    for i in range(6):
        b.put(("a", i), 10, tenant="a")
    first = b.poll()
    assert {e.tenant for e in first} == {"a"}
    b.put(("b", 0), 10, tenant="b")  # b joins at the current minimum, not with banked credit
    b.put(("b", 1), 10, tenant="b")
    second = b.poll()
    assert Counter(e.tenant for e in second) == {"a": 1, "b": 1}
    third = b.poll()
    assert Counter(e.tenant for e in third) == {"a": 1, "b": 1}


def test_unused_fair_slots_go_to_anyone():
    b, _ = make(size=4, tokens=100_000, wait_ms=0)
    for i in range(10):
        b.put(("a", i), 10, tenant="a")
    b.put(("b", 0), 10, tenant="b")
    assert Counter(e.tenant for e in b.poll()) == {"a": 3, "b": 1}


def test_lowering_the_token_ceiling_is_remembered_and_never_raises_it():
    b, _ = make(size=8, tokens=100)
    assert b.lower_token_ceiling(40) == 40
    assert b.lower_token_ceiling(90) == 40
    for i in range(4):
        b.put(i, 20)
    b.close()
    assert len(b.poll()) == 2  # 2 × 20 = 40


def test_fifty_thousand_tenants_leave_state_only_for_the_active_ones():
    """Every tenant name ever seen used to stay in the fairness state and each new one scanned them
    all (linear per request). Now a tenant is forgotten when its last entry leaves."""
    import time

    b, _ = make(size=8, tokens=10_000, wait_ms=0)
    per_request_us = []
    t0 = time.perf_counter()
    for i in range(50_000):
        b.put(i, 10, tenant=f"tenant-{i}")
        if len(b) >= 8:
            assert len(b.poll()) == 8
        assert b.active_tenants() <= 8 and len(b._waiting) <= 8  # bounded by what waits
        if (i + 1) % 10_000 == 0:
            per_request_us.append((time.perf_counter() - t0) / 10_000 * 1e6)
            t0 = time.perf_counter()
    while b.poll() is not None:
        pass
    assert len(b) == 0 and b.active_tenants() == 0 and not b._served and not b._waiting
    print(f"per request, each 10k of 50k tenants: {[round(x, 1) for x in per_request_us]} µs")


def test_a_returning_tenant_starts_at_the_floor_of_the_active_ones():
    b, _ = make(size=2, tokens=1000, wait_ms=0)
    for i in range(6):
        b.put(("a", i), 10, tenant="a")
    b.put(("b", 0), 10, tenant="b")
    b.poll()  # a anchors (tie, oldest first) and b fills: a 10, b 10 served; b now idle
    assert b.active_tenants() == 1  # b forgotten
    b.poll()  # a alone: a 30
    b.put(("b", 1), 10, tenant="b")  # back at a's level (the floor), not at its old 10
    b.put(("b", 2), 10, tenant="b")
    assert Counter(e.tenant for e in b.poll()) == {"a": 1, "b": 1}


# -- composition by cost -------------------------------------------------------------------------
def test_short_texts_are_not_padded_to_the_long_ones_they_wait_beside():
    """The case that made 79 % padding: 27 short texts and 5 long ones fit the token budget
    together (32 × 256 = 8192); a pass over them is mostly padding, so they go apart."""
    b, _ = make(size=32, tokens=8_192, wait_ms=0)
    for i in range(27):
        b.put(("short", i), 10)
    for i in range(5):
        b.put(("long", i), 256)
    first, second = b.poll(), b.poll()
    assert {e.item[0] for e in first} == {"short"} and len(first) == 27
    assert {e.item[0] for e in second} == {"long"} and len(second) == 5
    assert padding_waste(lengths(first)) == 0.0 and padding_waste(lengths(second)) == 0.0
    assert b.poll() is None


def test_the_long_anchor_does_not_take_the_short_ones_along():
    b, _ = make(size=32, tokens=8_192, wait_ms=0)
    b.put(("long", 0), 256)
    for i in range(27):
        b.put(("short", i), 10)
    assert [e.item for e in b.poll()] == [("long", 0)]  # the anchor goes, alone
    assert len(b.poll()) == 27


def test_when_padding_is_free_the_batch_fills_as_before():
    """A measured per-token cost of 0 (or an overhead far above the padding) fills the batch."""
    clock = Clock()
    b = Batcher(BatchPolicy(32, 8_192, 0), clock=clock, cost=lambda: (0.0, 5.0))
    for i in range(27):
        b.put(("short", i), 10)
    for i in range(5):
        b.put(("long", i), 256)
    assert len(b.poll()) == 32


def test_measured_rates_decide_and_the_default_stands_in_until_there_are_some():
    rates: list[tuple[float, float] | None] = [None]
    clock = Clock()
    b = Batcher(BatchPolicy(8, 10_000, 0, overhead_tokens=64), clock=clock, cost=lambda: rates[0])
    b.put("a", 10)
    b.put("b", 200)
    assert len(b.poll()) == 1  # the default: 190 padded tokens cost more than a 64-token pass
    b.poll()
    rates[0] = (0.01, 10.0)  # 1000 tokens of overhead: padding 190 is cheaper than a second pass
    b.put("a", 10)
    b.put("b", 200)
    assert len(b.poll()) == 2


def test_a_shallow_pool_of_similar_lengths_still_goes_as_one_batch():
    b, _ = make(size=32, tokens=8_192, wait_ms=0)
    for i, n in enumerate([30, 34, 38, 41, 45]):
        b.put(i, n)
    assert len(b.poll()) == 5  # a few padded tokens each cost less than one more pass


def test_a_lone_short_request_still_goes_at_once():
    b, _ = make(size=32, tokens=8_192, wait_ms=0)
    b.put("only", 7)
    assert [e.item for e in b.poll()] == ["only"]


def test_padding_stays_low_under_any_length_mix():
    """Random streams of short, medium and long texts at several depths of pool: against the old
    fill (padding free), the cost (passes × overhead + padded tokens) falls, and so does the most
    padding any one batch carries (by 2-9× here)."""
    for mix in ([(5, 20), (200, 256)], [(5, 20), (30, 60), (200, 256)], [(5, 256)]):
        for per_poll in (2, 8, 32):
            costs, worst = [], []
            for overhead in (64.0, math.inf):
                rng = random.Random(11)
                b, clock = make(size=32, tokens=8_192, wait_ms=2)
                b.policy = BatchPolicy(32, 8_192, 2, overhead_tokens=overhead)
                padded, real, waste = 0, 0, []
                for i in range(1_500):
                    b.put(i, rng.randint(*rng.choice(mix)))
                    if i % per_poll == 0:
                        clock.advance_ms(3)
                        while (batch := b.poll()) is not None:
                            padded += padded_tokens(lengths(batch)) + 64
                            real += sum(lengths(batch))
                            waste.append(padded_tokens(lengths(batch)) - sum(lengths(batch)))
                b.close()
                while (batch := b.poll()) is not None:
                    padded += padded_tokens(lengths(batch)) + 64
                    waste.append(padded_tokens(lengths(batch)) - sum(lengths(batch)))
                costs.append(padded)
                worst.append(max(waste))
            assert costs[0] <= costs[1], (mix, per_poll, costs)
            assert worst[0] < worst[1], (mix, per_poll, worst)


def test_cheapest_prefix_prefers_the_longer_cut_on_a_tie_and_never_cuts_the_anchor():
    assert cheapest_prefix([10, 10, 10], [10, 10, 10], 32, 64.0) == 3
    assert cheapest_prefix([256, 10], [256, 10], 32, 64.0) == 1
    assert cheapest_prefix([256, 10], [256, 10], 32, math.inf) == 2
    assert cheapest_prefix([7], [7, 300], 32, 0.0) == 1


def test_a_shallow_pool_of_diverse_lengths_is_not_padded_to_its_longest():
    """Leaving entries behind is priced as batches of their own like lengths, not as one batch
    padded to the longest of everything left (which once made a 93 ride with the 9s)."""
    walk = [46, 39, 31, 27, 13, 12, 9, 9, 9, 84, 8, 7, 93, 93]
    keep = cheapest_prefix(walk, [*walk, 200, 230], 32, 11.0)
    assert max(walk[:keep]) < 84


def test_later_cost_groups_like_lengths_and_pays_one_overhead_per_group():
    assert later_cost([], 32, 10.0) == 0.0
    assert later_cost([50, 48, 45], 32, 10.0) == 10 + 3 * 50  # one batch: padding 2 + 5 < 10 each
    assert later_cost([50, 20], 32, 10.0) == (10 + 50) + (10 + 20)  # 30 padded tokens > a pass
    assert later_cost([5, 5, 5], 2, 10.0) == (10 + 10) + (10 + 5)  # at most ``slots`` a batch


def test_overhead_in_tokens_reads_the_rates():
    assert overhead_in_tokens(None, 64.0) == 64.0
    assert overhead_in_tokens((0.25, 16.0), 64.0) == 64.0
    assert overhead_in_tokens((0.0, 16.0), 64.0) == math.inf
    with pytest.raises(ValueError):
        BatchPolicy(1, 10, 1, overhead_tokens=-1)


def test_put_many_pools_like_single_puts_with_one_wake_up():
    one, _ = make(size=3, tokens=25)
    for x, n, prio, tenant in [("a", 10, 1, "t"), ("b", 10, 0, "u"), ("c", 10, 1, "t"), ("d", 1, 2, "")]:
        one.put(x, n, priority=prio, tenant=tenant)
    many, _ = make(size=3, tokens=25)
    many.put_many([("a", 10, 1, "t"), ("b", 10, 0, "u"), ("c", 10, 1, "t"), ("d", 1, 2, "")])
    assert [e.item for e in many.poll()] == [e.item for e in one.poll()]
    assert len(many) == len(one)
    wakes = []

    class Counting(threading.Condition):
        def notify(self, n: int = 1) -> None:
            wakes.append(n)
            super().notify(n)

    b, _ = make(size=100)
    b._cond = Counting(threading.Lock())
    b.put_many((x, 5, 1, "") for x in "abcdefgh")
    b.put_many([])  # nothing added: nobody woken
    assert wakes == [1] and len(b) == 8
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.put_many([("z", 1, 1, "")])
