"""The delivery service's report: the metric counts every outcome, written once per round; an
undeliverable result is an ECS record with the field names the dashboards query."""

from __future__ import annotations

import logging

from workers.delivery.service import DATASET, Report
from workers.delivery.sink import Delivery
from workers.telemetry.metrics import DELIVERIES


def count(sink: str, outcome: str) -> float:
    return DELIVERIES.labels(sink, outcome)._value.get()


def test_outcomes_are_counted_at_flush_and_a_give_up_is_an_ecs_record(caplog):
    d = Delivery(request_id="r1", tenant="acme", target="acme.out", body=b"{}", attempt=3)
    report = Report()
    before = {o: count("kafka", o) for o in ("sent", "retried", "failed")}
    with caplog.at_level(logging.INFO, logger="workers.delivery.service"):
        report.outcome(d, "kafka", "sent")
        report.outcome(d, "kafka", "retried", "timeout")
        report.outcome(d, "kafka", "retried", "timeout")
        report.outcome(d, "kafka", "failed", "gave_up_timeout")
        assert count("kafka", "sent") == before["sent"]  # not yet: one write per round
        report.flush()
    after = {o: count("kafka", o) - before[o] for o in before}
    assert after == {"sent": 1, "retried": 2, "failed": 1}
    (record,) = [r for r in caplog.records if getattr(r, "event.dataset", None) == DATASET]
    fields = {k: getattr(record, k) for k in vars(record) if k.startswith(("inferq.", "event."))}
    assert fields == {
        "event.dataset": "inferq.delivery",
        "event.outcome": "failure",
        "inferq.delivery.sink": "kafka",
        "inferq.delivery.outcome": "failed",
        "inferq.delivery.reason": "gave_up_timeout",
        "inferq.delivery.attempt": 3,
        "inferq.request_id": "r1",
        "inferq.tenant": "acme",
    }
    assert record.levelno == logging.WARNING
