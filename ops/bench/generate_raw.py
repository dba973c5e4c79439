"""The ceiling of the generation bench: the model alone, in this process, with transformers'
own ``generate()`` over the same prompts in static batches (no Kafka, Celery, Redis or decoder).

Batches of ``max_running`` prompts in the order the pipeline's clients send them, each decoded
greedily until every row has produced its end of turn or the batch's largest ``max_new_tokens``;
a row counts only the tokens it asked for (up to its own budget or end of turn). Time to first
token is the batch's prefill (timed from the first call of a logits processor); a request's latency
is its batch's wall time (the whole batch returns together).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from workers.core.runners.causal import CausalLM


class _FirstCall(LogitsProcessor):
    """Records when generate() first asks for the next token: the end of the prefill."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.at is None:
            self.at = time.monotonic()
        return scores


def _counted(row: list[int], budget: int, eos: frozenset[int]) -> int:
    for i, token in enumerate(row[:budget]):
        if token in eos:
            return i
    return min(len(row), budget)


@torch.inference_mode()
def raw_generate(
    runner: CausalLM, prompts: Sequence[Sequence[int]], budgets: Sequence[int], batch: int
) -> dict[str, Any]:
    """Greedy ``generate()`` over ``prompts`` in static batches of ``batch``; tokens/s, TTFT, latency."""
    eos = sorted(runner.eos_ids)
    pad = eos[0] if eos else 0
    tokens, ttft, latency = 0, [], []
    started = time.monotonic()
    for at in range(0, len(prompts), batch):
        rows, wants = prompts[at : at + batch], budgets[at : at + batch]
        width = max(len(p) for p in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, p in enumerate(rows):
            ids[i, width - len(p) :] = torch.as_tensor(list(p))
            mask[i, width - len(p) :] = 1
        first, t0 = _FirstCall(), time.monotonic()
        out = runner.model.generate(
            input_ids=ids.to(runner.model.device),
            attention_mask=mask.to(runner.model.device),
            max_new_tokens=max(wants),
            do_sample=False,
            eos_token_id=eos or None,
            pad_token_id=pad,
            logits_processor=LogitsProcessorList([first]),
        )
        done = time.monotonic()
        new = out[:, width:].tolist()
        tokens += sum(_counted(r, w, runner.eos_ids) for r, w in zip(new, wants, strict=True))
        ttft += [((first.at or done) - t0) * 1e3] * len(rows)
        latency += [(done - t0) * 1e3] * len(rows)
    wall_s = time.monotonic() - started
    return {
        "mode": "raw",
        "requests": len(prompts),
        "batch": batch,
        "tokens": tokens,
        "wall_s": wall_s,
        "tokens_per_s": tokens / wall_s,
        "ttft_p50_ms": float(np.percentile(ttft, 50)),
        "ttft_p99_ms": float(np.percentile(ttft, 99)),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p99_ms": float(np.percentile(latency, 99)),
        "failed": 0,
    }
