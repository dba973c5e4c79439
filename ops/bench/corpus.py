"""The benchmark's texts, built deterministically from the demo corpus (``ops/data/demo_texts.txt``).

Two corpora: :func:`bench_texts`, ~40-token texts of near-equal length (the classic run), and
:func:`mixed_texts`, real traffic's spread from one-line questions to paragraphs the model truncates
at 256 tokens, shuffled so that short and long arrive side by side.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ops.demo import demo_texts


def bench_texts(n: int = 512, seed: int = 13, parts: tuple[int, int] = (3, 5)) -> list[str]:
    """``n`` texts, each 3–5 demo sentences joined (≈ 30–55 tokens for MiniLM, ~44 on average)."""
    lines = demo_texts()
    rng = random.Random(seed)
    return [" ".join(rng.sample(lines, rng.randint(*parts))) for _ in range(n)]


@dataclass(frozen=True)
class Band:
    """One kind of text in the mix: its share and how many demo lines it joins (≈ 9 tokens each)."""

    name: str
    share: float
    lines: tuple[int, int]


# MiniLM token lengths (``python -m ops.bench.corpus`` prints them): questions ~5–15, a few sentences
# ~20–55, paragraphs ~70–160, long paragraphs ~180–250; the 512 texts the bench uses stay under 256
# tokens, so no system truncates and every one computes the same tokens (mean ~59, median ~32)
MIX: tuple[Band, ...] = (
    Band("question", 0.40, (1, 1)),
    Band("sentences", 0.30, (3, 5)),
    Band("paragraph", 0.20, (9, 16)),
    Band("long paragraph", 0.10, (22, 27)),
)


def mixed_texts(n: int = 512, seed: int = 17, mix: tuple[Band, ...] = MIX) -> list[str]:
    """``n`` texts drawn from ``mix`` by share (exact counts, shuffled with ``seed``)."""
    lines = demo_texts()
    rng = random.Random(seed)
    counts = [round(b.share * n) for b in mix]
    counts[0] += n - sum(counts)
    out = [
        " ".join(rng.choice(lines) for _ in range(rng.randint(*band.lines)))
        for band, count in zip(mix, counts, strict=True)
        for _ in range(count)
    ]
    rng.shuffle(out)
    return out


def corpus_summary(texts: list[str]) -> dict[str, float]:
    """What ``bench.json`` says about a corpus (token lengths are in the worker's batch records)."""
    chars = sorted(map(len, texts))
    return {"texts": len(texts), "mean_chars": sum(chars) / len(chars), "max_chars": chars[-1]}


def _print_lengths() -> None:
    """Token lengths of both corpora under MiniLM's tokenizer (truncated at 256, as served)."""
    from transformers import AutoTokenizer

    from workers.core.runners.embed import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    for name, texts in (("bench", bench_texts()), ("mixed", mixed_texts())):
        lengths = sorted(len(ids) for ids in tok(texts, truncation=True, max_length=256)["input_ids"])
        q = [lengths[int(p * (len(lengths) - 1))] for p in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)]
        print(f"{name}: {len(texts)} texts, mean {sum(lengths) / len(lengths):.1f} tokens, quantiles {q}")


if __name__ == "__main__":
    _print_lengths()
