"""A queued request whose deadline passes ends ``expired`` on time, wherever its message waits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ops.stack import Stack
from producers.client import InferqClient
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import deadlines_key
from schemas.results import queued_result
from schemas.settings import Settings
from workers.runtime.recovery import DEADLINE_SWEEP_S
from workers.store.store import request_digest


def test_the_workers_sweep_expires_queued_requests_at_their_deadline(
    stack: Stack, settings: Settings, client: InferqClient
) -> None:
    due = datetime.now(timezone.utc) + timedelta(milliseconds=300)
    # admitted but its message never reaches a worker (as if stuck behind a long queue)
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="waits forever", deadline=due)
    store = client.store
    before = store.in_flight()
    store.admit([(request_digest(req), queued_result(req, {}))], {req.request_id: req.deadline_ms() or 0.0})
    result = client.wait(req.request_id, timeout_s=10)
    late_ms = (result.timings.done_ms or 0.0) - (req.deadline_ms() or 0.0)
    assert result.status is ResultStatus.EXPIRED
    assert result.error is not None and result.error.code is ErrorCode.DEADLINE_EXPIRED
    assert 0 <= late_ms <= DEADLINE_SWEEP_S * 1000 * 4 + 500  # one sweep period, with slack for a busy box
    assert store.in_flight() == before
    assert store.client.zscore(deadlines_key(settings), req.request_id) is None


def test_a_request_that_finishes_leaves_the_sweep(
    stack: Stack, settings: Settings, client: InferqClient
) -> None:
    due = datetime.now(timezone.utc) + timedelta(seconds=60)
    rid = client.submit("embed", "all-MiniLM-L6-v2", "finishes in time", deadline=due)
    assert client.wait(rid, timeout_s=60).status is ResultStatus.DONE
    assert client.store.client.zscore(deadlines_key(settings), rid) is None
