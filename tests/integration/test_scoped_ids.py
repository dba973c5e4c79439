"""On the whole stack: two tenants using the same request id each get their own result, and the
requeue sweep never re-sends into a queue no live worker reads (issue 15, points 10 and 4)."""

from __future__ import annotations

from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus, Timings
from schemas.naming import model_queue
from schemas.results import queued_result
from schemas.work import Handoff, WorkItem
from tests.stack import eventually
from workers.runtime.recovery import requeue_stale
from workers.store.presence import ServedModels
from workers.store.store import Admission, request_digest
from workers.transport.app import CELERY_PRIORITY


def test_two_tenants_using_the_same_id_each_get_their_own_result(stack, client):
    rid = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="x").request_id
    client.submit("embed", "all-MiniLM-L6-v2", "tenant a writes about cats", request_id=rid, tenant="a")
    client.submit("embed", "all-MiniLM-L6-v2", "tenant b's payment failed", request_id=rid, tenant="b")
    # before: b's record was a conflicting reuse of a's id and was dead-lettered, never answered
    a, b = client.wait(rid, 60, tenant="a"), client.wait(rid, 60, tenant="b")
    assert a.status is b.status is ResultStatus.DONE
    assert (a.tenant, b.tenant) == ("a", "b")
    assert a.outputs[0].embedding != b.outputs[0].embedding
    assert client.result(rid, tenant="c") is None
    assert client.store.get(rid) is None  # the tenant-less namespace (the client defaults to its last tenant)


def test_the_requeue_sweep_fails_requests_for_a_model_nobody_serves_instead_of_resending(
    stack, settings, client
):
    store = client.store
    eventually(lambda: ServedModels(store.client, settings).served(), what="the worker advertised")
    reqs = {
        m: InferenceRequest(task=t, model=m, inputs=f"stale, for {m}", tenant="sweep")
        for m, t in (("all-MiniLM-L6-v2", "embed"), ("causal-lm", "generate"))
    }
    handoffs = {
        f"sweep~{r.request_id}": Handoff.of(
            model_queue(settings, r.model),
            CELERY_PRIORITY[r.priority],
            WorkItem(request=r, timings=Timings(queued_ms=1.0)),
        )
        for r in reqs.values()
    }
    admitted = store.admit([(request_digest(r), queued_result(r, {})) for r in reqs.values()], None, handoffs)
    assert admitted == [Admission.NEW, Admission.NEW]
    sent: list[str] = []
    # a worker's sweep, past the grace: causal-lm is in the catalogue but no worker here serves it
    served = ServedModels(store.client, settings.model_copy(update={"unserved_model_grace_s": 0.0}))
    rejected: list[str] = []
    counts = requeue_stale(
        store,
        served,
        0.0,
        lambda h: sent.append(h.model),
        lambda job: rejected.append(job.request.request_id),
    )
    assert counts["unavailable"] >= 1
    assert reqs["causal-lm"].request_id in rejected  # dead-lettered by the sweep that ended it
    assert "causal-lm" not in sent  # before: re-sent into a queue nothing reads, every period
    assert "all-MiniLM-L6-v2" in sent
    failed = client.result(reqs["causal-lm"].request_id, tenant="sweep")
    assert failed.status is ResultStatus.FAILED and failed.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert store.tenant_usage("sweep")[0] == 1  # the served one is still queued (its message was "sent")
    client.cancel(reqs["all-MiniLM-L6-v2"].request_id, tenant="sweep")
