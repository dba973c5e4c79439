"""CPU traces: interpolation between samples, windows, per-request figures, the steady window."""

import pytest

from ops.bench.cputrace import CpuTrace, Sample, cpu_at, per_request, steady_window


def test_cpu_at_interpolates_and_clamps():
    samples = [Sample(0.0, {"a": 0.0, "b": 10.0}), Sample(2.0, {"a": 100.0, "b": 10.0})]
    assert cpu_at(samples, 1.0) == {"a": 50.0, "b": 10.0}
    assert cpu_at(samples, -5.0) == {"a": 0.0, "b": 10.0} and cpu_at(samples, 9.0)["a"] == 100.0
    with pytest.raises(ValueError, match="no CPU samples"):
        cpu_at([], 1.0)


def test_trace_between_uses_its_clock_and_reader():
    clock = iter([0.0, 1.0, 2.0, 3.0])
    cpu = iter([{"w": 0.0}, {"w": 40.0}, {"w": 40.0}, {"w": 100.0}])
    trace = CpuTrace({"w": [1]}, read=lambda groups: next(cpu), clock=lambda: next(clock))
    for _ in range(4):
        trace.sample()
    assert trace.between(0.5, 2.5) == {"w": pytest.approx(50.0)}  # 20 + 0 + 30
    assert trace.between(2.5, 0.5) == {"w": 0.0}  # never negative


def test_background_sampling_stops_with_a_last_sample():
    n = iter(range(10**6))
    trace = CpuTrace({"g": []}, read=lambda groups: {"g": float(next(n))})
    trace.start(every_s=0.01)
    trace.stop()
    assert len(trace.samples) >= 2 and trace.samples[-1].ms["g"] == len(trace.samples) - 1


def test_per_request_adds_a_total():
    assert per_request({"a": 30.0, "b": 10.0}, 20) == {"a": 1.5, "b": 0.5, "total": 2.0}
    with pytest.raises(ValueError):
        per_request({"a": 1.0}, 0)


def test_steady_window_drops_the_first_and_last_tenth():
    done = [float(i) for i in range(100)]  # one completion a second
    w = steady_window(list(reversed(done)))
    assert (w.t0, w.t1, w.completions) == (10.0, 89.0, 79) and w.rate_per_s == pytest.approx(1.0)
    with pytest.raises(ValueError, match="more completions"):
        steady_window([1.0, 2.0])
