"""The instant model: MiniLM-shaped, deterministic, no compute."""

from __future__ import annotations

import numpy as np

from schemas.messages import InferenceRequest
from schemas.settings import Settings
from workers.core.runners import load_runner
from workers.core.runners.echo import DIM, EchoEncoder


def test_outputs_are_unit_vectors_of_minilm_shape_and_depend_only_on_the_text():
    runner = load_runner("echo-384", Settings())
    ids = runner.tokenize(["one two three", "a", "one two three"])
    rows = runner.forward(ids)
    assert rows.shape == (3, DIM) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(rows[0], rows[2]) and not np.array_equal(rows[0], rows[1])
    request = InferenceRequest.model_validate(
        {"schema_version": 1, "task": "embed", "model": "echo-384", "inputs": "one two three"}
    )
    out = runner.output(rows[0], request)
    assert len(out.model_dump()["embedding"]) == DIM and runner.version == "echo-384@seed384"


def test_token_counts_are_words_plus_specials_capped_at_the_model_limit():
    runner = EchoEncoder(max_length_tokens=8)
    lengths = [len(ids) for ids in runner.tokenize(["", "x y", "w " * 100])]
    assert lengths == [2, 4, 8]
    assert runner.forward(runner.tokenize(["w " * 100])).shape == (1, DIM)
