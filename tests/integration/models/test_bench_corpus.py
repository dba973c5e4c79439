"""The bench's mixed corpus under MiniLM's real tokenizer, and the cost model the engine fits at
warm-up on the real model (a model load, so not in the fast tier)."""

from transformers import AutoTokenizer

from ops.bench.corpus import mixed_texts
from schemas.settings import Settings
from tests.fakes import FakeStore
from workers.core.batcher import BatchPolicy
from workers.core.engine import Engine
from workers.core.runners import load_runner
from workers.core.runners.embed import minilm_path


def test_mixed_corpus_stays_within_256_tokens_and_spans_questions_to_paragraphs():
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    lengths = sorted(len(ids) for ids in tok(mixed_texts(512))["input_ids"])
    assert lengths[-1] <= 256  # nobody truncates: every system computes the same tokens
    assert lengths[len(lengths) // 10] <= 12 and lengths[-len(lengths) // 20] >= 180


def test_warm_up_fits_minilm_cost_before_the_first_request():
    runner = load_runner("all-MiniLM-L6-v2", Settings(torch_threads=1))
    engine = Engine(runner, FakeStore(), BatchPolicy())
    try:
        assert engine.cost.rates() is None
        engine.warm_up()
        rates = engine.cost.rates()
        assert rates is not None
        per_token_ms, per_batch_ms = rates
        assert per_token_ms > 0 and per_batch_ms >= 0
        print(f"MiniLM, 1 thread: {per_token_ms:.3f} ms per padded token, {per_batch_ms:.1f} ms per pass")
    finally:
        engine.close()
