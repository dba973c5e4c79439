"""all-MiniLM-L6-v2 as a BentoML service with adaptive batching (run by ``ops.bench.peers``).

Started with ``bentoml serve ops.bench.peer_apps.bentoml_service:Embedder`` in BentoML's own venv;
the model folder comes from ``INFERQ_BENCH_MODEL_PATH``. POST /embed {"texts": ["..."]}.
"""

import os

import bentoml
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

MODEL_PATH = os.environ.get("INFERQ_BENCH_MODEL_PATH", "")  # set by the bench for this process only
THREADS = int(os.environ.get("INFERQ_BENCH_THREADS", "2"))


@bentoml.service(workers=1, traffic={"max_concurrency": 512})
class Embedder:
    def __init__(self) -> None:
        torch.set_num_threads(THREADS)
        self.tok = AutoTokenizer.from_pretrained(MODEL_PATH)
        self.model = AutoModel.from_pretrained(MODEL_PATH).eval()

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            out = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()
