"""What the generation :class:`~workers.core.decoder.Decoder` works with: its policy, the sequences
it continues, and the stream chunks it hands its outlet (:class:`~workers.core.loop.Outlet`).

Kept apart from the decoder's loop so the loop module stays about the loop. Times in ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.messages import FinishReason
from workers.core.jobs import Job
from workers.core.sampling import Sampler, StopText


@dataclass(frozen=True)
class DecodePolicy:
    max_running: int = 16  # sequences decoded together
    max_batch_tokens: int = 16_384  # KV cache reserved by the running sequences (prompt + budget)
    max_new_tokens: int = 512  # the operator's cap on any request's max_new_tokens
    max_prompt_tokens: int = 1_024
    stream_interval_ms: float = 50.0
    static: bool = False  # join only when the running batch is empty
    static_wait_ms: float = 0.0  # static: how long a new batch waits to fill
    # most prompt tokens prefilled per iteration while others run (0 = a joiner's whole prompt at once)
    prefill_chunk_tokens: int = 512
    # what a chunk may cost, in decode steps of the running batch (0 = always prefill_chunk_tokens)
    prefill_stall_steps: float = 2.0


@dataclass(eq=False)
class Seq:
    """One prompt being continued."""

    job: Job
    index: int
    prompt: list[int]
    budget: int  # tokens it may generate
    sampler: Sampler
    stops: StopText
    stream: bool
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # visible text so far (held-back stop prefixes excluded)
    sent: int = 0  # characters of ``text`` already handed to the outlet
    finish: FinishReason | None = None
    key: str | None = None  # its result-cache key (None: not cached)
    cached_tokens: int | None = None  # answered from the result cache: the tokens its output counted
    queued_s: float = 0.0  # when it was queued (the decoder's clock, s)

    @property
    def reserve(self) -> int:
        return len(self.prompt) + self.budget

    @property
    def generated(self) -> int:
        """Tokens generated for it (as counted when cached)."""
        return len(self.tokens) if self.cached_tokens is None else self.cached_tokens


@dataclass(frozen=True)
class Chunk:
    """New text of one sequence, for the outlet (the Kafka stream)."""

    request_id: str
    index: int
    text: str
    tokens: int
    finish_reason: FinishReason | None
