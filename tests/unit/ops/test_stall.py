"""The prefill-stall measurement (ops/bench/stall.py) runs the real decoder end to end on a tiny
model: a long prompt joins running sequences, whole and chunked, and every figure comes back."""

from ops.bench.stall import StallPlan, measure_stall
from tests.tiny_models import tiny_causal_lm


def test_the_stall_is_measured_whole_and_chunked():
    plan = StallPlan(running=2, prompt_tokens=60, chunks=((0, 0.0), (8, 0.0), (64, 2.0)))
    got = measure_stall(tiny_causal_lm(), plan)
    assert [(g["prefill_chunk_tokens"], g["prefill_stall_steps"]) for g in got] == list(plan.chunks)
    for g in got:
        assert g["decode_step_ms"] > 0 and g["stall_ms"] >= g["decode_step_ms"] * 0.5
        assert g["stall_steps"] == g["stall_ms"] / g["decode_step_ms"]
