"""The cost model and the adaptive wait, on synthetic timings and a fake clock."""

import random

import pytest

from workers.core.batcher import Batcher, BatchPolicy
from workers.core.wait_policy import AdaptiveWait, CostModel, FixedWait


def fitted(a=0.2, b=0.5, c=15.0, noise=0.0, seed=1):
    rng = random.Random(seed)
    cost = CostModel(min_samples=8, refit_every=1)
    for _ in range(64):
        n = rng.randint(1, 32)
        tokens = n * rng.randint(8, 60)
        cost.observe(tokens, n, a * tokens + b * n + c + rng.gauss(0, noise))
    return cost


def test_cost_model_recovers_its_coefficients():
    a, b, c = fitted().coefficients
    assert (a, b, c) == pytest.approx((0.2, 0.5, 15.0), rel=1e-6)
    noisy = fitted(noise=1.0)
    assert noisy.predict_ms(640, 16) == pytest.approx(0.2 * 640 + 0.5 * 16 + 15, rel=0.05)


def test_cost_model_is_not_ready_until_it_has_samples_and_never_goes_negative():
    cost = CostModel(min_samples=8)
    for _ in range(7):
        cost.observe(100, 4, 10.0)
    assert not cost.ready
    with pytest.raises(RuntimeError):
        cost.predict_ms(1, 1)
    for _ in range(8):
        cost.observe(100, 4, 10.0)  # every batch the same: the fit must still be usable
    assert cost.ready and all(x >= 0 for x in cost.coefficients)
    assert cost.predict_ms(100, 4) == pytest.approx(10.0)


def test_unfitted_adaptive_wait_behaves_like_the_fixed_timer():
    wait = AdaptiveWait(CostModel(), target_latency_ms=100, max_wait_ms=10)
    assert wait.wait_ms(1, 40, 0, 0.0) == FixedWait(10).wait_ms(1, 40, 0, 0.0) == 10


def test_low_load_flushes_at_once():
    wait = AdaptiveWait(fitted(), target_latency_ms=100, max_wait_ms=10)
    for t in range(5):
        wait.on_arrival(t * 0.1)  # 10 texts/s, a forward pass ≈ 25 ms: nobody will join
    assert wait.wait_ms(1, 40, 0, 0.4) == 0.0


def test_high_arrival_rate_waits_up_to_the_cap():
    wait = AdaptiveWait(fitted(), target_latency_ms=100, max_wait_ms=10)
    for i in range(400):
        wait.on_arrival(i * 0.0025)  # ≈ 400 texts/s: many join during half a pass
    assert wait.wait_ms(2, 80, 0, 1.0) == 10


def test_never_waits_past_the_target_latency():
    wait = AdaptiveWait(fitted(), target_latency_ms=100, max_wait_ms=50)
    for i in range(400):
        wait.on_arrival(i * 0.0025)
    run_ms = wait.cost.predict_ms(80, 2)
    assert wait.wait_ms(2, 80, 100 - run_ms, 1.0) == 0.0
    assert wait.wait_ms(2, 80, 0, 1.0) <= 100 - run_ms


def test_the_batcher_asks_its_wait_policy():
    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Clock()
    wait = AdaptiveWait(fitted(), target_latency_ms=100, max_wait_ms=10)
    b = Batcher(BatchPolicy(32, 10_000, 10), wait, clock=clock)
    b.put("lone", 10)
    assert [e.item for e in b.poll()] == ["lone"]  # low load: no timer at all
    fixed = Batcher(BatchPolicy(32, 10_000, 10), FixedWait(10), clock=clock)
    fixed.put("lone", 10)
    assert fixed.poll() is None


def test_calibration_fits_overhead_and_per_token_cost_before_any_batch():
    cost = CostModel()
    assert cost.rates() is None
    seen = []

    def run_ms(texts: int, tokens: int) -> float:
        seen.append((texts, tokens))
        return 12.0 + 0.25 * texts * tokens  # 12 ms a pass, 0.25 ms a padded token

    cost.calibrate(run_ms)
    per_token, per_batch = cost.rates()
    assert per_token == pytest.approx(0.25) and per_batch == pytest.approx(12.0)
    assert {t for t, _ in seen} == {1, 8} and {n for _, n in seen} == {16, 128}


def test_rates_keep_a_per_token_cost_when_the_texts_term_could_absorb_it():
    """Batches of like lengths make padded tokens and texts collinear; the three-term fit may then
    put everything on texts. The batcher's rates are fitted on padded tokens alone."""
    cost = CostModel(min_samples=8, refit_every=1)
    for n in (1, 2, 4, 8, 16, 32) * 3:
        cost.observe(40 * n, n, 10.0 + 0.25 * 40 * n)  # every text 40 tokens: tokens = 40 × texts
    per_token, per_batch = cost.rates()
    assert per_token == pytest.approx(0.25) and per_batch == pytest.approx(10.0)


def test_calibration_stands_in_only_until_real_batches_are_enough():
    cost = CostModel(min_samples=8, refit_every=1)
    cost.calibrate(lambda texts, tokens: 500.0 + 0.1 * texts * tokens)  # a slow start: big overhead
    assert cost.rates()[1] == pytest.approx(500.0)
    for n in (1, 2, 4, 8, 16, 32, 3, 5):
        cost.observe(20 * n * 2, n, 5.0 + 0.25 * 20 * n * 2)
    per_token, per_batch = cost.rates()
    assert per_token == pytest.approx(0.25) and per_batch == pytest.approx(5.0)
