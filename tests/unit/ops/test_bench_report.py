"""The bench's pure parts: goals, summaries, bench.json and the plot (no servers, no timing)."""

import json

import pytest
from rich.console import Console

from ops.bench.corpus import MIX, bench_texts, corpus_summary, mixed_texts
from ops.bench.report import (
    deciding_levels,
    goals,
    peer_goals,
    plot,
    print_report,
    system_summary,
    write_json,
)


def level(c, tput, p50, p99, errors=0):
    return {
        "system": "x",
        "concurrency": c,
        "completed": 10,
        "window_s": 1.0,
        "throughput_per_s": tput,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
    }


def test_goals_compare_ratio_and_latency():
    g = goals(raw_best=100, pipeline=92, batch1_ms=25, p50_ms=39, p99_ms=70)
    assert g["ratio"] == 0.92 and g["ratio_met"] and g["low_load_p50_met"] and g["low_load_p99_met"]
    g = goals(raw_best=100, pipeline=80, batch1_ms=25, p50_ms=41, p99_ms=90)
    assert not (g["ratio_met"] or g["low_load_p50_met"] or g["low_load_p99_met"])


def test_summary_takes_best_throughput_and_the_ends_of_the_sweep():
    s = system_summary([level(1, 30, 40, 60), level(8, 90, 80, 120), level(32, 85, 300, 500, errors=1)])
    assert s["max_throughput_per_s"] == 90 and s["low_load_p50_ms"] == 40 and s["high_load_p99_ms"] == 500
    assert s["errors"] == 1 and system_summary([]) == {}


def test_corpus_is_deterministic_and_long_enough():
    a, b = bench_texts(20), bench_texts(20)
    assert a == b and all(len(t.split()) >= 10 for t in a)


def test_mixed_corpus_is_deterministic_and_spreads_from_questions_to_paragraphs():
    texts = mixed_texts(512)
    assert texts == mixed_texts(512) and len(texts) == 512 and sum(b.share for b in MIX) == pytest.approx(1.0)
    words = sorted(len(t.split()) for t in texts)
    assert words[len(words) // 10] <= 10 and words[-len(words) // 20] >= 120  # short and long, mixed
    assert corpus_summary(texts)["texts"] == 512


def test_goals_take_the_median_ratio_when_given_and_peers_are_judged_at_each_deciding_level():
    assert goals(100, 80, 25, 39, 70, ratio=0.93)["ratio"] == 0.93
    inferq = [level(1, 30, 40, 60), level(8, 90, 80, 120), level(32, 85, 300, 500)]
    peer = [level(1, 20, 40, 60), level(8, 50, 80, 120), level(32, 70, 300, 500)]
    assert deciding_levels(inferq, peer) == [8, 32] and deciding_levels(inferq, []) == [8]
    peers = {
        "slow": {"vs_inferq": {"8": {"ratio": 1.8}, "32": {"ratio": 1.2}}},
        "close": {"vs_inferq": {"8": {"ratio": 0.97}}},
        "broken": {"error": "no venv"},
    }
    g = peer_goals(peers)
    assert g["ahead_of_peers_by"] == {"slow": 1.2, "close": 0.97} and not g["ahead_of_every_peer"]


def test_json_table_and_plot_are_written(tmp_path):
    levels = [level(1, 30, 40, 60), level(8, 90, 80, 120)]
    data = {
        "model": "m",
        "machine": {"device": "cpu", "cpus": 2},
        "raw": {
            "best_layout": "1 process × 2 threads",
            "best_batch_size": 32,
            "best_swept_seq_per_s": 104.0,
            "batch1_p50_ms": 25.0,
        },
        "raw_best_seq_per_s": 100.0,
        "pipeline_seq_per_s": 92.0,
        "ratio": 0.92,
        "low_load_p50_ms": 39.0,
        "low_load_p99_ms": float("nan"),
        "goals": goals(100, 92, 25, 39, 70),
        "inferq": {"levels": levels, "summary": system_summary(levels)},
        "ratio_runs": [0.9, 0.92, 0.95],
        "ratio_spread": {"min": 0.9, "max": 0.95},
        "padding_waste": {"batches": 12, "mean": 0.031, "max": 0.2, "token_share": 0.02},
        "peers": {
            "other": {
                "levels": levels,
                "summary": system_summary(levels),
                "vs_inferq": {"8": {"ratio": 1.31, "ratio_spread": {"min": 1.2, "max": 1.4}}},
            },
            "broken": {"error": "no venv"},
        },
    }
    write_json(tmp_path / "bench.json", data)
    assert json.loads((tmp_path / "bench.json").read_text())["low_load_p99_ms"] is None  # NaN → null
    plot(tmp_path / "bench.png", data)
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(record=True, width=160)
    print_report(console, data)
    text = console.export_text()
    assert "0.920" in text and "other" in text and "no venv" in text
    assert "[0.90–0.95]" in text and "3.1% / 20.0%" in text and "1.31 [1.20–1.40] @8" in text


def test_generate_figures_come_from_the_results_timings():
    from ops.bench.generate import GeneratePlan, print_generate, summarise
    from schemas.messages import GenerationOutput, InferenceResult, ResultStatus, Timings

    def result(i, tokens, ttft_ms, total_ms, status=ResultStatus.DONE):
        t0 = 1_000_000.0 + i * 10
        return InferenceResult(
            request_id=f"req-{i:016d}",
            status=status,
            outputs=[GenerationOutput(text="x", tokens=tokens, finish_reason="length")],
            timings=Timings(published_ms=t0, first_token_ms=t0 + ttft_ms, done_ms=t0 + total_ms),
        )

    results = [result(0, 100, 20, 1_000), result(1, 50, 40, 990), result(2, 0, 5, 10, ResultStatus.FAILED)]
    m = summarise("continuous", results)
    assert (m.requests, m.tokens, m.failed) == (3, 150, 1)
    assert m.wall_s == 1.0 and m.tokens_per_s == 150.0  # first publish → last result
    assert m.ttft_p50_ms == 30.0 and m.latency_p99_ms > 990
    budgets = GeneratePlan(requests=50).budgets()
    assert budgets == GeneratePlan(requests=50).budgets() and min(budgets) >= 8 and max(budgets) <= 256
    data = {
        "model": "smollm2-135m-instruct",
        "plan": GeneratePlan().__dict__,
        "modes": {"continuous": {"16": m.as_dict()}, "static": {"16": m.as_dict()}},
        "raw": {**m.as_dict(), "mode": "raw", "batch": 16},
        "continuous_over_static": {"16": {"tokens_per_s": 1.0, "ttft_p50": 1.0, "continuous_over_raw": 0.9}},
        "stall": [
            {"prefill_chunk_tokens": 0, "decode_step_ms": 20.0, "stall_ms": 400.0, "stall_steps": 20.0}
        ],
    }
    console = Console(record=True, width=200)
    print_generate(console, data)
    text = console.export_text()
    assert "continuous" in text and "tokens/s × 1.00" in text
    assert "raw generate()" in text and "continuous ÷ raw: × 0.90" in text and "= 20.0 decode steps" in text
