"""Choosing each generated token, and cutting the text at stop sequences.

:class:`Sampler` is one sequence's decoding rule: greedy at temperature 0, else temperature-scaled
nucleus (top-p) sampling from a generator of its own, so a seeded request gives the same text
whichever neighbours share its batch. :func:`pick_tokens` applies a batch's samplers to one
step's logits (greedy rows in one argmax). :class:`StopText` watches a growing text for stop
sequences and says how much of it may be shown yet: a tail that could still turn into a stop
sequence is held back, so a streamed text never shows what the final one will not.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch

from schemas.messages import GenerationParams


class Sampler:
    """Greedy (temperature 0) or temperature + top-p sampling with a private, seedable generator."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.greedy = temperature <= 0.0
        self._generator: torch.Generator | None = None
        if not self.greedy:
            self._generator = torch.Generator()
            self._generator.manual_seed(secrets.randbits(63) if seed is None else seed)

    @classmethod
    def for_request(cls, params: GenerationParams, index: int = 0) -> Sampler:
        """The sampler of input ``index`` of a request (each input of a seeded request gets seed + index)."""
        seed = None if params.seed is None else (params.seed + index) % 2**63
        return cls(params.temperature, params.top_p, seed)

    def pick(self, logits: torch.Tensor) -> int:
        """One token id from a row of logits (shape ``[vocab]``, float32)."""
        if self.greedy:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            probs = nucleus(probs, self.top_p)
        # inverse-CDF draw: one uniform number per token (torch.multinomial over a 30k vocabulary
        # took a fifth of a decode step on the CPU)
        cdf = probs.cumsum(-1)
        u = torch.rand((), generator=self._generator) * cdf[-1]
        return min(int(torch.searchsorted(cdf, u, right=True)), len(cdf) - 1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` restricted to the smallest set of most likely tokens whose mass reaches ``top_p``."""
    ordered, order = probs.sort(descending=True)
    before = ordered.cumsum(-1) - ordered  # mass of the tokens ranked above each one
    ordered = ordered.masked_fill(before >= top_p, 0.0)  # the first token always stays
    kept = torch.zeros_like(probs).scatter_(-1, order, ordered)
    return kept / kept.sum()


def pick_tokens(logits: torch.Tensor, samplers: Sequence[Sampler]) -> list[int]:
    """One token per row of ``logits`` (``[rows, vocab]``), by each row's sampler."""
    greedy = logits.argmax(dim=-1).tolist() if any(s.greedy for s in samplers) else []
    # the samplers' generators live on the CPU: sampled rows are drawn there
    on_cpu = logits.cpu() if not all(s.greedy for s in samplers) else logits
    return [int(greedy[i]) if s.greedy else s.pick(on_cpu[i]) for i, s in enumerate(samplers)]


class StopText:
    """Stop sequences over a growing text: the part that may be shown, and whether to stop."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._searched = 0  # the text before this offset holds no stop sequence

    def update(self, text: str) -> tuple[str, bool]:
        """``text`` is everything generated so far. Returns (visible text, stopped).

        Stopped: the text up to the first stop sequence (excluded). Otherwise: the text without a
        tail that is the beginning of some stop sequence, nor a trailing replacement character
        (half of a multi-byte character still being generated).
        """
        if not self.stops:
            return text.rstrip("\ufffd"), False
        longest = max(len(s) for s in self.stops)
        start = max(0, self._searched - longest + 1)
        hits = [i for s in self.stops if (i := text.find(s, start)) >= 0]
        if hits:
            return text[: min(hits)], True
        self._searched = len(text)
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), hold, -1):
                if text.endswith(stop[:k]):
                    hold = k
                    break
        return text[: len(text) - hold].rstrip("\ufffd"), False
