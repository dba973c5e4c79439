"""The fault drills at test size, on a drill stack of their own (``ops.drill``, as ``inferq-ops drill``).

Four faults, 2,000 requests each: kill -9 of the worker mid-batch and of the intake, restarts of
Redis and of the broker. Every accepted request must end ``done``, none lost, none duplicated
(records the local broker drops on a restart are re-sent by the drill's producer, and counted).
Then a short overload at 3 × the measured capacity with a low backpressure bound: the backlog must
stay in Kafka, in-flight requests under the bound, and every request end ``done`` or ``expired``.
"""

from __future__ import annotations

import json

import pytest

from ops.drill.faults import FAULTS
from ops.drill.replies import REPLIES
from ops.drill.run import DrillPlan, run_drills
from schemas.settings import Settings

# the module's stack runs every drill in its first test's setup (~4 min here)
pytestmark = pytest.mark.timeout(1_800)

REQUESTS = 2_000
BOUND = 150  # per model: two models → at most 300 admitted and unfinished


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("drill")
    base = Settings(
        state_dir=out,
        kafka_partitions=3,
        kafka_session_timeout_ms=6_000,
        torch_threads=1,
        transport_batch_size=32,
        backpressure_max_inflight=BOUND,
    )
    # first, the worker kill with every request naming a reply topic (issue 19); the overload run
    # follows the broker restart, as it always has
    plan = DrillPlan(drills=(REPLIES, *FAULTS), requests=REQUESTS, rate_per_s=200.0, overload_s=12.0)
    result = run_drills(base, plan, out)
    return {**result, "written": json.loads((out / "drill.json").read_text())}


@pytest.mark.parametrize("name", [*FAULTS, REPLIES])
def test_a_fault_loses_and_duplicates_nothing(report: dict, name: str) -> None:
    drill = next(d for d in report["drills"] if d["name"] == name)
    assert drill["requests"] == REQUESTS
    assert (drill["lost"], drill["duplicated"]) == (0, 0), drill  # with lost_sample: which, in what state
    assert drill["by_status"] == {"done": REQUESTS}
    # the local broker (noida-db, one node, no replication) drops a few acknowledged records when it
    # restarts (2-119 of 2,000 seen here): the drill finds them missing from the log and its producer
    # sends them again (same id, same payload); no other fault may make the broker lose any
    broker_lost = drill["lost_by_broker"] if name == "broker-restart" else 0
    assert drill["lost_by_broker"] == broker_lost <= REQUESTS // 10
    assert drill["resent_after_broker_loss"] == broker_lost
    assert drill["back_after_s"] > 0
    if name in ("worker-kill", REPLIES):
        assert drill["running_at_fault"] > 0  # killed in the middle of a batch


def test_a_worker_killed_mid_batch_still_puts_one_distinct_result_per_request_on_its_reply_topic(
    report: dict,
) -> None:
    replies = report["reply_topics"][REPLIES]
    assert replies["requests"] == REQUESTS and replies["missing"] == 0
    assert replies["distinct_keys"] == REQUESTS  # dedup on the key: exactly one result each …
    assert replies["keys_with_differing_values"] == 0  # … and a repeat (if any) is the same bytes
    assert replies["values_not_equal_to_redis"] == 0 and replies["ok"] is True


def test_overload_keeps_the_backlog_in_kafka_and_ends_every_request(report: dict) -> None:
    ov = report["overload"]
    assert ov["offered_per_s"] >= 2.9 * ov["capacity_per_s"]
    assert ov["lost"] == 0
    assert set(ov["by_status"]) <= {"done", "expired"} and sum(ov["by_status"].values()) == ov["requests"]
    assert ov["peak_kafka_lag"] > 0  # the backlog waited in Kafka …
    assert ov["peak_in_flight"] <= 2 * BOUND  # … not in Celery or Redis
    # what expired in the backlog was answered about when it expired (the paused intake skims the
    # head of the backlog every 0.25 s), not when its turn to be read came; generous for slow CI
    assert ov["expired_written_after_deadline_ms"]["max"] < 5_000


def test_drill_json_holds_the_report(report: dict) -> None:
    written = report["written"]
    assert written["ok"] is True
    assert [d["name"] for d in written["drills"]] == [REPLIES, *FAULTS]
    for drill in written["drills"]:
        assert {"requests", "lost", "duplicated", "by_status"} <= set(drill)
    assert written["overload"]["memory_mb"]["worker_rss_mb"]["peak"] is not None
