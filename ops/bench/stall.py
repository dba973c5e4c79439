"""The prefill stall: how long running generations wait when a long prompt joins their batch.

In one process, on the real model, with a result store that keeps nothing (the figure is the
decoder's schedule, not Redis): ``running`` sequences decode with long budgets; once they are
going, a prompt of ``prompt_tokens`` joins. Every decode step's end is timed through the
decoder's observer; the stall is the longest gap between two consecutive decode steps of the
running sequences after the join, also given in median decode steps. Measured with the whole
prompt prefilled at once (``prefill_chunk_tokens=0``, the behaviour before chunking), in fixed
chunks (``prefill_stall_steps=0``), and in chunks sized by the fitted cost of a pass (the default).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from schemas.messages import InferenceRequest, InferenceResult
from schemas.observer import Observer, StepStats
from schemas.work import WorkItem
from workers.core.decoder import Decoder
from workers.core.runners.causal import CausalLM
from workers.core.sequences import DecodePolicy


class NullStore:
    """What the decoder writes goes nowhere: every start is a first, every flag says go on."""

    def start(self, results: Iterable[InferenceResult]) -> list[int]:
        return [1 for _ in results]

    def advance(self, results: Iterable[InferenceResult], **_: Any) -> list[bool]:
        return [True for _ in results]

    def progress(self, results: Sequence[InferenceResult]) -> list[str]:
        return ["" for _ in results]


class StepClock(Observer):
    """The end time (monotonic s), row count and joiners of every decode step."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int, int]] = []

    def step_done(self, stats: StepStats) -> None:
        self.steps.append((time.monotonic(), stats.running, stats.joined))


@dataclass(frozen=True)
class StallPlan:
    running: int = 8
    prompt_tokens: int = 1_000
    # (most tokens per chunk, what a chunk may cost in decode steps; 0 = fixed chunks)
    chunks: tuple[tuple[int, float], ...] = ((0, 0.0), (128, 0.0), (512, 2.0))


def _request(model: str, text: str, tokens: int, chat: bool = False) -> WorkItem:
    """A greedy request; ``chat``: as a user's message (a chat model answers it at length, where a
    bare prompt may end at once)."""
    params = {"max_new_tokens": tokens, "temperature": 0.0}
    body = {"messages": [{"role": "user", "content": text}]} if chat else {"inputs": text}
    return WorkItem(
        request=InferenceRequest.model_validate(
            {"task": "generate", "model": model, "generation": params, **body}
        )
    )


def stall_once(runner: CausalLM, plan: StallPlan, chunk: int, stall_steps: float) -> dict[str, float]:
    """One measurement: the longest gap between decode steps once the long prompt joined."""
    clock = StepClock()
    policy = DecodePolicy(
        max_running=plan.running + 1,
        stream_interval_ms=1e9,
        prefill_chunk_tokens=chunk,
        prefill_stall_steps=stall_steps,
    )
    d = Decoder(runner, NullStore(), policy, observer=clock)  # type: ignore[arg-type]
    try:
        d.warm_up()  # as a worker does at start: the chunk sizer is calibrated
        story = "Tell me a long story about a lighthouse keeper and a storm."
        chat = bool(getattr(runner.tokenizer, "chat_template", None))
        running = d.submit([_request(runner.name, story, 60, chat) for _ in range(plan.running)])
        give_up = time.monotonic() + 300
        while len(clock.steps) < 10:
            if all(j.done.is_set() for j in running) or time.monotonic() > give_up:
                raise RuntimeError(f"the running sequences ended after {len(clock.steps)} steps; need 10")
            time.sleep(0.005)
        long_text = " ".join(["word"] * plan.prompt_tokens)
        joined_at = len(clock.steps)
        jobs = d.submit([_request(runner.name, long_text, 4)])
        jobs[0].done.wait(120)
    finally:
        d.close()
    times = [t for t, _, _ in clock.steps]
    before = [b - a for a, b in pairwise(times[:joined_at])]
    after = [b - a for a, b in pairwise(times[joined_at - 1 :])]
    step_ms = statistics.median(before) * 1e3
    stall_ms = max(after) * 1e3
    return {
        "prefill_chunk_tokens": chunk,
        "prefill_stall_steps": stall_steps,
        "decode_step_ms": step_ms,
        "stall_ms": stall_ms,
        "stall_steps": stall_ms / step_ms,
    }


def measure_stall(runner: CausalLM, plan: StallPlan) -> list[dict[str, float]]:
    """The stall with each chunking of the plan (chunk 0 = the whole prompt at once)."""
    return [stall_once(runner, plan, chunk, steps) for chunk, steps in plan.chunks]
