"""Rounds in alternation: the order flips each round, and the ratio is the median of per-round ratios."""

import math

from ops.bench.trusted import Interleaved, interleave


def test_rounds_alternate_which_side_goes_first():
    calls = []
    a_values, b_values = iter([100.0, 80.0, 120.0, 90.0]), iter([90.0, 80.0, 60.0, 90.0])

    def a() -> float:
        calls.append("a")
        return next(a_values)

    def b() -> float:
        calls.append("b")
        return next(b_values)

    got = interleave("raw", a, "pipeline", b, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert got.a_runs == [100.0, 80.0, 120.0, 90.0] and got.b_runs == [90.0, 80.0, 60.0, 90.0]
    assert got.ratio_runs == [0.9, 1.0, 0.5, 1.0]
    assert got.ratio == 0.95  # the median, not one lucky or unlucky round
    spread = got.spread()
    assert spread["min"] == 0.5 and spread["max"] == 1.0 and spread["p25"] <= 0.95 <= spread["p75"]
    d = got.as_dict()
    assert d["raw_median"] == 95.0 and d["pipeline_median"] == 85.0 and d["ratio_runs"] == got.ratio_runs


def test_a_zero_rate_round_does_not_poison_the_median():
    got = Interleaved("raw", "pipeline", [0.0, 100.0, 100.0], [50.0, 90.0, 95.0])
    assert math.isnan(got.ratio_runs[0]) and got.ratio == 0.925
    assert Interleaved("a", "b").spread() == {} and math.isnan(Interleaved("a", "b").ratio)


def test_one_round_has_no_spread_but_still_a_ratio():
    got = Interleaved("raw", "pipeline", [100.0], [90.0])
    assert got.ratio == 0.9 and got.spread()["iqr"] == 0.0
