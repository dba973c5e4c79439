"""Per-request records only where they are read; one record per store write names the requests."""

from __future__ import annotations

import logging

import pytest

from schemas.errors import ModelError
from schemas.messages import InferenceRequest, ResultStatus
from schemas.results import result
from schemas.settings import Settings
from workers.telemetry.events import REQUEST_DATASET, RESULTS_DATASET
from workers.telemetry.logs import SkipDataset
from workers.telemetry.observe import Telemetry


def written(n: int) -> list:
    out = []
    for i in range(n):
        req = InferenceRequest(task="embed", model="echo-384", inputs=f"t{i}")
        status, error = (ResultStatus.FAILED, ModelError("x")) if i == 0 else (ResultStatus.DONE, None)
        out.append(result(req, status, {"done_ms": 2.0, "batch_id": "b1"}, error))
    return out


def datasets(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(r, "event.dataset") for r in caplog.records if r.name == "inferq.events"]


def test_without_shipping_one_record_names_every_request_of_a_write(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "inferq.events")
    results = written(5)
    Telemetry(Settings(log_ship=False)).results_written(results)
    assert datasets(caplog) == [RESULTS_DATASET]
    (record,) = caplog.records
    assert getattr(record, "inferq.request_ids") == [r.request_id for r in results]
    assert getattr(record, "inferq.results.count") == 5 and getattr(record, "inferq.results.failed") == 1
    assert getattr(record, "inferq.batch_id") == "b1" and record.levelno == logging.WARNING
    assert all(r.request_id in record.getMessage() for r in results)


def test_at_debug_or_with_shipping_each_request_has_its_record_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "inferq.events")
    Telemetry(Settings(log_ship=False)).results_written(written(3))
    assert sorted(datasets(caplog)) == [REQUEST_DATASET] * 3 + [RESULTS_DATASET]
    caplog.clear()
    caplog.set_level(logging.INFO, "inferq.events")
    Telemetry(Settings(log_ship=True)).result_written(written(1)[0])
    assert sorted(datasets(caplog)) == [REQUEST_DATASET, RESULTS_DATASET]


def test_skip_dataset_keeps_other_records() -> None:
    skip = SkipDataset(REQUEST_DATASET)
    mine = logging.makeLogRecord({"event.dataset": REQUEST_DATASET})
    other = logging.makeLogRecord({"event.dataset": RESULTS_DATASET})
    assert not skip.filter(mine) and skip.filter(other) and skip.filter(logging.makeLogRecord({}))


def test_observe_many_writes_what_observe_one_by_one_writes() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from workers.telemetry.metrics import observe_many

    amounts = [0.0, 0.005, 0.0051, 0.3, 2.5, 7.0, 100.0, 0.005, 1e-9]
    one, many = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "h", ["m"], buckets=(0.005, 0.01, 0.5, 2.5, 60), registry=one).labels("x")
    for v in amounts:
        a.observe(v)
    observe_many(
        Histogram("h", "h", ["m"], buckets=(0.005, 0.01, 0.5, 2.5, 60), registry=many).labels("x"), amounts
    )

    def samples(registry: CollectorRegistry) -> list[tuple[str, dict, float]]:
        return [
            (s.name, s.labels, s.value)
            for m in registry.collect()
            for s in m.samples
            if "created" not in s.name
        ]

    assert samples(one) == samples(many)
