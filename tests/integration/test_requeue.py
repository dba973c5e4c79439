"""A request whose Celery message was lost (a worker killed as it took the message from Redis) is
sent again from the hand-off the store keeps while it is queued, and then served once."""

from __future__ import annotations

from schemas.messages import InferenceRequest, ResultStatus, Timings
from schemas.naming import model_queue, pending_key
from schemas.results import queued_result
from schemas.work import Handoff, WorkItem
from workers.store.store import Admission, ResultStore, request_digest
from workers.transport.app import CELERY_PRIORITY, TASK_INFER, make_app


def admitted_without_a_message(store: ResultStore, settings, text: str) -> InferenceRequest:
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=text)
    item = WorkItem(request=req, timings=Timings(queued_ms=1.0))
    handoff = Handoff.of(model_queue(settings, req.model), CELERY_PRIORITY[req.priority], item)
    verdict = store.admit([(request_digest(req), queued_result(req, {}))], None, {req.request_id: handoff})
    assert verdict == [Admission.NEW]
    return req


def test_a_lost_message_is_claimed_once_sent_again_and_served(stack, settings, client):
    store = client.store
    lost = admitted_without_a_message(store, settings, "its message never reached a worker")
    assert store.claim_stale(older_than_s=3600) == []  # not stale yet
    (claimed,) = [
        h for h in store.claim_stale(older_than_s=0) if h.work().request.request_id == lost.request_id
    ]
    assert claimed.queue == model_queue(settings, lost.model)
    assert all(h.work().request.request_id != lost.request_id for h in store.claim_stale(older_than_s=0.5))
    # what the workers' heartbeat does with a claimed hand-off
    make_app(settings).send_task(
        TASK_INFER, args=[[claimed.item]], queue=claimed.queue, priority=claimed.priority
    )
    res = client.wait(lost.request_id, timeout_s=60)
    assert res.status is ResultStatus.DONE and len(res.outputs[0].embedding) == 384
    # started, then done: no longer pending, its hand-off gone
    assert store.client.zscore(pending_key(settings), lost.request_id) is None
    assert store.client.hget(f"{settings.key_prefix}:result:{lost.request_id}", "handoff") is None
    assert all(h.work().request.request_id != lost.request_id for h in store.claim_stale(older_than_s=0))


def test_requests_that_flow_normally_leave_nothing_pending(client, settings):
    rid = client.submit("embed", "all-MiniLM-L6-v2", "a normal request")
    assert client.wait(rid, 60).status is ResultStatus.DONE
    assert client.store.client.zscore(pending_key(settings), rid) is None
    cancelled = admitted_without_a_message(client.store, settings, "cancelled before it started")
    assert client.cancel(cancelled.request_id) is ResultStatus.CANCELLED
    assert client.store.client.zscore(pending_key(settings), cancelled.request_id) is None
