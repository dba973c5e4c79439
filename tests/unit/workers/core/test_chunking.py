"""Prefill chunks sized by the fitted cost of a forward pass (workers/core/chunking.py): pure
decisions on a cost model fed by hand."""

from __future__ import annotations

import pytest

from workers.core.chunking import ChunkSizer


def fed(
    per_token_ms: float,
    per_pass_ms: float,
    max_tokens: int = 512,
    stall_steps: float = 2.0,
    running: int = 8,
) -> ChunkSizer:
    """A sizer that saw prefills of several shapes and decode steps of ``running`` rows."""
    sizer = ChunkSizer(max_tokens, stall_steps)
    for rows, columns in ((1, 8), (1, 64), (1, 128), (4, 32), (2, 200), (8, 16)) * 2:
        sizer.observe_prefill(rows, columns, per_pass_ms + per_token_ms * rows * columns)
    for _ in range(20):
        sizer.observe_step(per_pass_ms + per_token_ms * running)
    return sizer


def test_on_a_cpu_like_device_a_chunk_costs_about_the_allowed_decode_steps():
    sizer = fed(per_token_ms=1.5, per_pass_ms=55.0)
    columns = sizer.columns(joining_rows=1, running_rows=8, width=1000)
    step_ms, chunk_ms = 55.0 + 1.5 * 8, 55.0 + 1.5 * columns
    assert chunk_ms <= 2.0 * step_ms + 1.5 and chunk_ms > 1.8 * step_ms
    assert 40 <= columns <= 60  # far below the 512 a GPU gets


def test_on_a_gpu_like_device_the_chunk_is_the_largest_allowed():
    sizer = fed(per_token_ms=0.002, per_pass_ms=12.0)
    assert sizer.columns(joining_rows=1, running_rows=8, width=1000) == 512
    assert sizer.columns(joining_rows=4, running_rows=8, width=1000) == 128  # 512 tokens over 4 rows
    assert sizer.columns(joining_rows=1, running_rows=8, width=90) == 90  # never past the prompt


def test_with_nobody_running_more_joining_than_running_or_chunking_off_the_prompt_goes_whole():
    sizer = fed(per_token_ms=1.5, per_pass_ms=55.0)
    assert sizer.columns(joining_rows=3, running_rows=0, width=700) == 700
    # a burst of 29 behind 3 running: 1-column chunks would take 133 passes to start the 29
    assert sizer.columns(joining_rows=29, running_rows=3, width=133) == 133
    assert sizer.columns(joining_rows=3, running_rows=3, width=700) < 700  # as many running: chunked
    assert fed(1.5, 55.0, max_tokens=0).columns(joining_rows=1, running_rows=8, width=700) == 700


@pytest.mark.parametrize("stall_steps", [0.0, 2.0])
def test_fixed_chunks_until_fitted_or_when_asked(stall_steps):
    unfitted = ChunkSizer(128, stall_steps)
    assert unfitted.columns(joining_rows=2, running_rows=8, width=1000) == 64
    assert fed(1.5, 55.0, max_tokens=128, stall_steps=0.0).columns(1, 8, 1000) == 128


def test_a_chunk_is_at_least_one_column_whatever_the_rates():
    sizer = fed(per_token_ms=50.0, per_pass_ms=0.0, stall_steps=0.1)
    assert sizer.columns(joining_rows=16, running_rows=16, width=1000) == 1


def test_calibration_and_a_first_step_size_the_first_chunk():
    sizer = ChunkSizer(512, 2.0)
    sizer.calibrate(lambda rows, columns: 55.0 + 1.5 * rows * columns)
    assert sizer.columns(joining_rows=1, running_rows=8, width=1000) == 512  # no step timed yet: fixed
    sizer.observe_step(55.0 + 1.5 * 8)
    assert 40 <= sizer.columns(joining_rows=1, running_rows=8, width=1000) <= 60


def test_a_window_of_like_passes_does_not_turn_the_per_pass_cost_into_per_token():
    # a GPU-like device: a lone sequence decodes 300 steps (every pass one token), then a prompt joins
    sizer = ChunkSizer(512, 2.0)
    sizer.calibrate(lambda rows, columns: 12.0 + 0.002 * rows * columns)
    for _ in range(300):
        sizer.observe_step(12.0)
    assert sizer.columns(joining_rows=1, running_rows=1, width=1000) == 512  # not 2


def test_decode_steps_do_not_move_the_prefill_fit_and_bad_timings_are_ignored():
    sizer = fed(per_token_ms=1.5, per_pass_ms=55.0)
    before = sizer.cost.rates()
    for ms in (float("nan"), float("inf"), -3.0, 0.0):
        sizer.observe_step(ms)
        sizer.observe_prefill(1, 64, ms)
    for _ in range(500):  # a long run of full decode steps, all one size
        sizer.observe_step(55.0 + 1.5 * 32)
    assert sizer.cost.rates() == before
    assert sizer.step_ms == pytest.approx(55.0 + 1.5 * 32)
    # a bigger batch decodes slower, so a chunk may be bigger for the same stall in steps
    assert sizer.columns(joining_rows=1, running_rows=32, width=1000) > fed(1.5, 55.0).columns(1, 8, 1000)


def test_a_later_chunk_shrinks_by_how_far_the_last_pass_overran_the_fit():
    sizer = fed(per_token_ms=1.5, per_pass_ms=55.0)
    first = sizer.columns(joining_rows=1, running_rows=8, width=1000, done=0)
    # deep into a long prompt the pass also attends over what came before: twice the predicted time
    sizer.observe_prefill(1, first, 2 * (55.0 + 1.5 * first))
    later = sizer.columns(joining_rows=1, running_rows=8, width=1000 - first, done=first)
    assert 55.0 + 1.5 * later <= (55.0 + 1.5 * first) / 2 + 1.5  # its predicted cost halved
    assert sizer.columns(joining_rows=1, running_rows=8, width=1000, done=0) == first  # a new prompt
