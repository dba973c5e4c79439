"""``echo-384``: an instant model shaped like all-MiniLM-L6-v2, for load tests and capacity planning.

It does no compute: a text's "tokens" are its whitespace-separated words (plus the two special
tokens an encoder adds, truncated to the model limit), and its embedding is a fixed unit vector
picked by that length from a table built once from a fixed seed. So it is deterministic (the same
text always gets the same vector), its outputs have MiniLM's shape (384 float32s, unit norm), and
the batcher still sees varied lengths; what a run measures is the pipeline's own cost, as with
Triton's identity backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas.messages import EmbeddingOutput, InferenceRequest, Task
from schemas.settings import Settings
from workers.core.runners.packing import embedding_output

DIM = 384
SPECIAL_TOKENS = 2  # [CLS] … [SEP], as MiniLM's tokenizer adds
SEED = 384


class EchoEncoder:
    """The instant encoder: :class:`workers.core.runners.base.Runner` with no model behind it."""

    name = "echo-384"
    task = Task.EMBED
    device = "cpu"

    def __init__(self, max_length_tokens: int) -> None:
        self.max_length_tokens = max(1, max_length_tokens)
        self.version = f"{self.name}@seed{SEED}"
        table = np.random.default_rng(SEED).standard_normal((self.max_length_tokens + 1, DIM))
        self._table = (table / np.linalg.norm(table, axis=1, keepdims=True)).astype(np.float32)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.max_length_tokens
        return [[0] * min(len(text.split()) + SPECIAL_TOKENS, limit) for text in texts]

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """One row per input, shape (len(batch), 384), float32, unit norm."""
        return self._table[[len(ids) for ids in batch]]

    def output(self, row: np.ndarray, request: InferenceRequest) -> EmbeddingOutput:
        return embedding_output(row, request.encoding)


def load_echo(settings: Settings) -> EchoEncoder:
    return EchoEncoder(settings.model_max_length_tokens)
