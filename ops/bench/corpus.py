"""The benchmark's texts: ~40-token sentences built deterministically from the demo corpus."""

from __future__ import annotations

import random

from ops.demo import demo_texts


def bench_texts(n: int = 512, seed: int = 13, parts: tuple[int, int] = (3, 5)) -> list[str]:
    """``n`` texts, each 3–5 demo sentences joined (≈ 30–55 tokens for MiniLM, ~44 on average)."""
    lines = demo_texts()
    rng = random.Random(seed)
    return [" ".join(rng.sample(lines, rng.randint(*parts))) for _ in range(n)]
