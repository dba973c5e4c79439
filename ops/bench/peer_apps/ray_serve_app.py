"""all-MiniLM-L6-v2 behind Ray Serve with ``@serve.batch`` (run by ``ops.bench.peers``, in Ray's venv).

Same model folder, same pooling as inferq: mean-pooled, L2-normalised embeddings.
POST / {"text": "..."} → {"embedding": [...]}.
"""

import argparse
import time

import torch
from ray import serve
from starlette.requests import Request
from transformers import AutoModel, AutoTokenizer


def build(model_path: str, max_batch_size: int, wait_s: float, threads: int):
    # Ray Serve admits 5 requests per replica by default, which caps @serve.batch at 5 (its own
    # warning says so): let a full batch, and the next one, be in the replica at once
    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=2 * max_batch_size)
    class Embedder:
        def __init__(self) -> None:
            torch.set_num_threads(threads)
            self.tok = AutoTokenizer.from_pretrained(model_path)
            self.model = AutoModel.from_pretrained(model_path).eval()

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=wait_s)
        async def embed(self, texts: list[str]) -> list[list[float]]:
            enc = self.tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                out = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1).tolist()

        async def __call__(self, request: Request) -> dict:
            body = await request.json()
            return {"embedding": await self.embed(body["text"])}

    return Embedder.bind()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--wait-s", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": a.port})
    serve.run(build(a.model, a.max_batch_size, a.wait_s, a.threads), route_prefix="/")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
