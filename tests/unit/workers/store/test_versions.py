"""Per-version counts as a canary is judged by them (pure): error rate and the p99's bucket."""

from __future__ import annotations

from collections import Counter

from workers.store.versions import LATENCY_BUCKETS_MS, MinuteCounts, _bucket


def test_latencies_fall_in_the_first_bucket_that_holds_them():
    assert _bucket(0.0) == LATENCY_BUCKETS_MS[0]
    assert _bucket(10.0) == 10 and _bucket(10.5) == 25
    assert _bucket(10**9) == 0  # above the last bound


def test_error_rate_and_p99_of_a_version():
    c = MinuteCounts(ok=98, failed=2, buckets=Counter({50: 97, 1_000: 1}))
    assert c.total == 100 and c.error_rate == 0.02
    assert c.quantile_ms(0.5) == 50.0
    assert c.quantile_ms(0.99) == 1_000.0
    assert MinuteCounts().quantile_ms(0.99) == 0.0 and MinuteCounts().error_rate == 0.0
    assert MinuteCounts(ok=1, buckets=Counter({0: 1})).quantile_ms(0.99) == float("inf")


class _Pipe:
    """What VersionCounts asks of a Redis pipeline, kept in a dict."""

    def __init__(self, fields: dict[str, int]) -> None:
        self.fields = fields

    def hincrby(self, key: str, field: str, n: int) -> None:
        self.fields[field] = self.fields.get(field, 0) + n

    def expire(self, key: str, seconds: int) -> None:
        pass

    def execute(self) -> None:
        pass


class _Client:
    def __init__(self) -> None:
        self.fields: dict[str, int] = {}

    def pipeline(self, transaction: bool = False) -> _Pipe:
        return _Pipe(self.fields)


def test_expired_and_cancelled_results_are_not_errors_of_the_version():
    """A tenant cannot make a healthy canary look broken (and ``rollout watch`` roll it back for
    everyone) by pinning it with requests it cancels or whose deadline it sets to pass: only
    failures are errors of the version; expired and cancelled results are not counted at all."""
    from schemas import results
    from schemas.errors import Cancelled, DeadlineExpired, ModelError
    from schemas.messages import InferenceRequest, ResultStatus
    from schemas.settings import Settings
    from workers.store.versions import VersionCounts

    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=["x"])  # routed to the canary
    t = {"received_ms": 1_000.0, "done_ms": 1_020.0}
    mv = "all-MiniLM-L6-v2@canary1"
    written = [
        results.result(req, ResultStatus.DONE, t, model_version=mv, outputs=[results.embedding("[0.0]")]),
        results.result(req, ResultStatus.FAILED, t, ModelError("boom"), model_version=mv),
        *[results.result(req, ResultStatus.EXPIRED, t, DeadlineExpired("late"), model_version=mv)] * 5,
        *[results.result(req, ResultStatus.CANCELLED, t, Cancelled("by its sender"), model_version=mv)] * 5,
    ]
    client = _Client()
    VersionCounts(client, Settings()).results_written(written)
    assert client.fields == {"canary1|ok": 1, "canary1|failed": 1, "canary1|le25": 1}


def test_results_of_pinned_requests_do_not_judge_the_version():
    """A canary is judged on the unpinned traffic the rollout sends it. A tenant pinning it could
    otherwise bury its errors under its own successes (so a broken canary is promoted) or queue
    slow requests on it to push its p99 past the threshold (so a healthy one is rolled back)."""
    from schemas import results
    from schemas.errors import ModelError
    from schemas.messages import InferenceRequest, ResultStatus
    from schemas.settings import Settings
    from workers.store.versions import VersionCounts

    mv = "all-MiniLM-L6-v2@canary1"
    pinned = InferenceRequest(task="embed", model=mv, inputs=["x"])
    routed = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=["x"])
    slow = {"received_ms": 0.0, "done_ms": 60_000.0}
    written = [
        *[results.result(pinned, ResultStatus.DONE, slow, model_version=mv, outputs=[])] * 50,
        results.result(routed, ResultStatus.FAILED, slow, ModelError("boom"), model_version=mv),
    ]
    client = _Client()
    VersionCounts(client, Settings()).results_written(written)
    assert client.fields == {"canary1|failed": 1}
