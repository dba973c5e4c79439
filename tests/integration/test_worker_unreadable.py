"""Celery items a worker cannot read (issue 15, point 1): each is failed (where its id is readable)
and dead-lettered through the one letter builder, and the other items of the same message are
served. Before: an item that was not a dict, or had no ``request``, failed the whole message."""

from __future__ import annotations

from typing import Any

from producers.client import InferqClient
from schemas.errors import ErrorCode
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import model_queue
from schemas.results import queued_result
from schemas.settings import Settings
from tests.stack import dead_letters
from workers.store.store import request_digest
from workers.transport.app import CELERY_PRIORITY, TASK_INFER, make_app

MODEL = "all-MiniLM-L6-v2"


def test_unreadable_items_are_failed_and_dead_lettered_beside_served_ones(stack, settings: Settings) -> None:
    good = InferenceRequest(task="embed", model=MODEL, inputs="served beside unreadable items")
    odd = InferenceRequest(task="embed", model=MODEL, inputs="an item from a newer intake")
    with InferqClient(settings) as client:
        for r in (good, odd):
            client.store.admit([(request_digest(r), queued_result(r, {}))])
        newer = {**odd.wire_dict(), "a_field_from_the_future": 1}
        items = [  # the first one readable: the sender's router reads its model
            {"request": good.wire_dict(), "timings": {}},
            "not an object",
            {"no_request": True},
            {"request": newer, "timings": "not a dict"},
        ]
        make_app(settings).send_task(
            TASK_INFER,
            args=[items],
            queue=model_queue(settings, MODEL),
            priority=CELERY_PRIORITY[good.priority],
        )
        results = client.wait_all([good.request_id, odd.request_id], timeout_s=60)
    assert results[good.request_id].status is ResultStatus.DONE
    assert results[odd.request_id].status is ResultStatus.FAILED
    error = results[odd.request_id].error
    assert error is not None and error.code is ErrorCode.VALIDATION_ERROR
    letter = dead_letters(settings, {odd.request_id})[odd.request_id]
    assert letter.error.code is ErrorCode.VALIDATION_ERROR and letter.payload_sha256
    names = {'"not an object"', '{"no_request": true}'}
    unnamed = dead_letters(settings, names, timeout_s=30)
    assert {unnamed[n].error.code for n in names} == {ErrorCode.INTERNAL_ERROR}
    assert unnamed['"not an object"'].error.detail == {"exception": "TypeError"}


def test_an_item_with_an_unreadable_source_or_empty_timings_is_served_as_workers_always_did(
    stack, settings: Settings
) -> None:
    """The source only places a dead letter and empty timings mean "none known": a worker before the
    typed work item served such requests, so the typed one must too (it failed them
    ``validation_error``). Timings that are not an object stay a malformed item: ``internal_error``."""
    served: dict[str, dict[str, Any]] = {
        "source not an object": {"source": "nope"},
        "source of wrong types": {"source": {"topic": 5, "partition": "x", "offset": [], "key": 7}},
        "timings an empty list": {"timings": []},
        "timings an empty string": {"timings": ""},
    }
    reqs = {name: InferenceRequest(task="embed", model=MODEL, inputs=f"served: {name}") for name in served}
    odd = InferenceRequest(task="embed", model=MODEL, inputs="timings that are not an object")
    with InferqClient(settings) as client:
        for r in (*reqs.values(), odd):
            client.store.admit([(request_digest(r), queued_result(r, {}))])
        items: list[dict[str, Any]] = [
            {"request": reqs[n].wire_dict(), "timings": {}, **over} for n, over in served.items()
        ]
        items.append({"request": odd.wire_dict(), "timings": "not a dict"})
        make_app(settings).send_task(TASK_INFER, args=[items], queue=model_queue(settings, MODEL), priority=5)
        results = client.wait_all([*(r.request_id for r in reqs.values()), odd.request_id], timeout_s=60)
    for name, r in reqs.items():
        assert results[r.request_id].status is ResultStatus.DONE, (name, results[r.request_id].error)
    error = results[odd.request_id].error
    assert results[odd.request_id].status is ResultStatus.FAILED
    assert error is not None and error.code is ErrorCode.INTERNAL_ERROR
    assert error.detail == {"exception": "TypeError"}
    letter = dead_letters(settings, {odd.request_id})[odd.request_id]
    assert letter.error.code is ErrorCode.INTERNAL_ERROR


def test_an_unreadable_item_whose_tenant_is_not_a_string_does_not_fail_the_items_beside_it(
    stack, settings: Settings
) -> None:
    """Answering it built a result with the raw tenant, which raised: the task failed and the good
    item of the same message stayed ``queued`` for ever."""
    good = InferenceRequest(task="embed", model=MODEL, inputs="served beside a tenant that is a number")
    odd = InferenceRequest(task="embed", model=MODEL, inputs="x")
    with InferqClient(settings) as client:
        client.store.admit([(request_digest(good), queued_result(good, {}))])
        items = [
            {"request": good.wire_dict(), "timings": {}},
            {"request": {**odd.wire_dict(), "tenant": 123, "task": ["embed"]}, "timings": {}},
        ]
        make_app(settings).send_task(TASK_INFER, args=[items], queue=model_queue(settings, MODEL), priority=5)
        assert client.wait(good.request_id, timeout_s=60).status is ResultStatus.DONE
        failed = client.wait(odd.request_id, timeout_s=30)
    assert failed.status is ResultStatus.FAILED and failed.tenant is None and failed.task is None
    assert failed.error is not None and failed.error.code is ErrorCode.VALIDATION_ERROR
