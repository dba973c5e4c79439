"""Per-version counts as a canary is judged by them (pure): error rate and the p99's bucket."""

from __future__ import annotations

from collections import Counter

from workers.store.versions import LATENCY_BUCKETS_MS, MinuteCounts, _bucket


def test_latencies_fall_in_the_first_bucket_that_holds_them():
    assert _bucket(0.0) == LATENCY_BUCKETS_MS[0]
    assert _bucket(10.0) == 10 and _bucket(10.5) == 25
    assert _bucket(10**9) == 0  # above the last bound


def test_error_rate_and_p99_of_a_version():
    c = MinuteCounts(ok=98, failed=2, buckets=Counter({50: 97, 1_000: 1}))
    assert c.total == 100 and c.error_rate == 0.02
    assert c.quantile_ms(0.5) == 50.0
    assert c.quantile_ms(0.99) == 1_000.0
    assert MinuteCounts().quantile_ms(0.99) == 0.0 and MinuteCounts().error_rate == 0.0
    assert MinuteCounts(ok=1, buckets=Counter({0: 1})).quantile_ms(0.99) == float("inf")
