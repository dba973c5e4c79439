"""A ratio that can be trusted: two measurements taken in alternation, many times, summarised.

A shared machine drifts (one run here measured raw MiniLM at 76 seq/s, and at 106 fifteen minutes
later), so a ratio of two figures taken minutes apart says as much about the drift as about the
systems. Here both sides are measured in rounds, A then B, then B then A (so neither side always
goes first), on the same texts, and each round gives one ratio; the report is the median ratio
with its spread (min, max, interquartile range) and every run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Interleaved:
    """Rounds of ``a`` and ``b`` (each a rate, higher is better); ratio = b ÷ a per round."""

    a_name: str
    b_name: str
    a_runs: list[float] = field(default_factory=list)
    b_runs: list[float] = field(default_factory=list)

    @property
    def ratio_runs(self) -> list[float]:
        return [b / a if a > 0 else float("nan") for a, b in zip(self.a_runs, self.b_runs, strict=True)]

    @property
    def ratio(self) -> float:
        runs = [r for r in self.ratio_runs if r == r]
        return statistics.median(runs) if runs else float("nan")

    def spread(self) -> dict[str, float]:
        """min, max and the interquartile range (p25, p75) of the per-round ratios."""
        runs = sorted(r for r in self.ratio_runs if r == r)
        if not runs:
            return {}
        q = statistics.quantiles(runs, n=4, method="inclusive") if len(runs) > 1 else [runs[0]] * 3
        return {"min": runs[0], "max": runs[-1], "p25": q[0], "p75": q[2], "iqr": q[2] - q[0]}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ratio_runs": self.ratio_runs,
            "ratio_spread": self.spread(),
            f"{self.a_name}_runs": self.a_runs,
            f"{self.b_name}_runs": self.b_runs,
            f"{self.a_name}_median": statistics.median(self.a_runs) if self.a_runs else float("nan"),
            f"{self.b_name}_median": statistics.median(self.b_runs) if self.b_runs else float("nan"),
        }


def interleave(
    a_name: str,
    measure_a: Callable[[], float],
    b_name: str,
    measure_b: Callable[[], float],
    rounds: int,
    progress: Callable[[str], None] = lambda _: None,
) -> Interleaved:
    """``rounds`` rounds of A and B: A B, B A, A B, … (the order flips each round, so a drift over
    the run lands on both sides alike)."""
    out = Interleaved(a_name, b_name)
    for i in range(rounds):
        first_a = i % 2 == 0
        got: dict[str, float] = {}
        for name, measure in ((a_name, measure_a), (b_name, measure_b))[:: 1 if first_a else -1]:
            progress(f"{name}: round {i + 1} of {rounds}")
            got[name] = measure()
        out.a_runs.append(got[a_name])
        out.b_runs.append(got[b_name])
    return out
