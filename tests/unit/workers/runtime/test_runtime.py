"""The worker runtime's own logic with fake loops and an in-memory store (pure unit tests; the
real path, with Celery, Redis and the models, is in tests/integration)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from celery import Celery
from pydantic import ValidationError

from schemas.errors import ErrorCode, ModelUnavailable
from schemas.messages import ErrorInfo, InferenceRequest, InferenceResult, ResultStatus
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.work import WorkItem
from tests.fakes import FakeStore
from workers.core.jobs import Job
from workers.core.loop import ModelLoop
from workers.runtime import Unwritten, WorkerRuntime
from workers.runtime.loops import ModelLoops
from workers.runtime.publish import Publisher
from workers.runtime.runtime import unreadable_error


class RuntimeStore(FakeStore):
    """The fake store as the runtime holds it (the runtime reads ``client`` only for recovery)."""

    client = None

    @property
    def written(self) -> list[InferenceResult]:
        return list(self.results.values())


class DoneLoop:
    """A loop that answers every item at once (``unwritten`` when told to)."""

    version = "m@test"

    def __init__(self, unwritten: bool = False) -> None:
        self.submitted: list[tuple[list[WorkItem], bool]] = []
        self.unwritten = unwritten

    def submit(self, items: Sequence[WorkItem], first_delivery: bool = False) -> list[Job]:
        self.submitted.append((list(items), first_delivery))
        jobs = Job.new(items, first_delivery)
        for job in jobs:
            job.finish(ResultStatus.DONE)
            job.unwritten = self.unwritten
            job.done.set()
        return jobs

    def warm_up(self) -> None: ...

    def close(self, timeout_s: float = 30.0) -> None: ...


class Letters(Publisher):
    def __init__(self) -> None:
        self.unread: list[tuple[Any, str | None, ErrorInfo]] = []

    def unreadable(self, raw: Any, request_id: str | None, error: ErrorInfo) -> None:
        self.unread.append((raw, request_id, error))


def runtime(loops: dict[str, ModelLoop]) -> tuple[WorkerRuntime, RuntimeStore]:
    store = RuntimeStore()
    rt = WorkerRuntime(Settings(), Observer(), app=Celery("test"), store=store)  # type: ignore[arg-type]

    def build(model: str) -> ModelLoop:
        if model not in loops:
            raise ModelUnavailable(f"no runner for {model}")
        return loops[model]

    rt.loops = ModelLoops(build)
    rt.publisher = Letters()
    return rt, store


def item(model: str, text: str = "x") -> WorkItem:
    return WorkItem(request=InferenceRequest(task="embed", model=model, inputs=text))


def test_each_model_s_items_go_to_its_loop_together_and_are_counted() -> None:
    a, b = DoneLoop(), DoneLoop()
    rt, _ = runtime({"a": a, "b": b})
    counts = rt.serve([item("a"), item("b"), item("a")], first_delivery=True)
    assert counts == {"done": 3}
    assert [len(items) for items, _ in a.submitted] == [2] and a.submitted[0][1] is True
    assert [len(items) for items, _ in b.submitted] == [1]


def test_a_model_this_worker_cannot_serve_is_answered_failed_and_the_others_served() -> None:
    rt, store = runtime({"a": DoneLoop()})
    counts = rt.serve([item("a"), item("nowhere"), item("nowhere")])
    assert counts == {"done": 1, "failed": 2}
    assert [r.status for r in store.written] == [ResultStatus.FAILED] * 2
    assert all(r.error and r.error.code is ErrorCode.MODEL_UNAVAILABLE for r in store.written)
    assert all(r.timings.done_ms for r in store.written)


def test_results_that_could_not_be_written_put_the_message_back() -> None:
    rt, _ = runtime({"a": DoneLoop(unwritten=True)})
    with pytest.raises(Unwritten) as raised:
        rt.serve([item("a"), item("a")])
    assert raised.value.count == 2


def test_a_model_loop_is_built_once_however_many_threads_ask_first() -> None:
    built: list[str] = []
    gate = threading.Barrier(8)

    def build(model: str) -> ModelLoop:
        built.append(model)
        return DoneLoop()

    loops = ModelLoops(build)
    got: list[ModelLoop] = []

    def ask() -> None:
        gate.wait()
        got.append(loops.get("m"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["m"] and len({id(loop) for loop in got}) == 1


def test_an_unreadable_item_is_answered_under_its_id_and_dead_lettered() -> None:
    rt, store = runtime({})
    good = item("a").wire()["request"]
    assert rt.unreadable({"request": {**good, "newer": 1}, "timings": {"queued_ms": 5.0}}, ValueError()) == 1
    (failed,) = store.written
    assert failed.request_id == good["request_id"] and failed.status is ResultStatus.FAILED
    assert failed.timings.queued_ms == 5.0 and failed.timings.done_ms
    assert rt.unreadable("not an object", TypeError("str")) == 0  # no id: dead-lettered only
    letters = rt.publisher.unread  # type: ignore[attr-defined]
    assert [rid for _, rid, _ in letters] == [good["request_id"], None]


@pytest.mark.parametrize("field", ["tenant", "task", "model"])
@pytest.mark.parametrize("value", [123, ["a"], {"x": 1}])
def test_an_unreadable_item_with_odd_fields_beside_its_id_is_answered(field: str, value: object) -> None:
    """Its tenant, task and model are whatever the item held: one that is not a string must not make
    ``unreadable`` raise (the whole message would fail, and the good items beside it stay queued)."""
    rt, store = runtime({})
    good = item("a").wire()["request"]
    assert rt.unreadable({"request": {**good, field: value}, "timings": {}}, ValueError()) == 1
    (failed,) = store.written
    assert failed.request_id == good["request_id"] and failed.status is ResultStatus.FAILED
    assert getattr(failed, field) is None


def test_unreadable_items_are_answered_by_kind() -> None:
    with pytest.raises(ValidationError) as invalid:
        WorkItem.parse({"request": {"task": "embed", "model": "a", "inputs": "x", "newer": 1}})
    assert unreadable_error(invalid.value).code is ErrorCode.VALIDATION_ERROR
    malformed = unreadable_error(TypeError("not an object"))
    assert malformed.code is ErrorCode.INTERNAL_ERROR and malformed.detail == {"exception": "TypeError"}


def test_items_go_to_the_version_they_were_routed_to_and_an_unserved_one_is_answered(monkeypatch) -> None:
    """``<model>@<variant>`` entries are loops of their own, found by the version they serve; an item
    routed to a version this worker does not load is answered ``model_unavailable``, not retried."""
    loops: dict[str, DoneLoop] = {}

    def build_loop(entry: str, *args: Any) -> DoneLoop:
        loops[entry] = DoneLoop()
        loops[entry].version = "a@fp32digest" if entry == "a" else "a@int8digest"
        return loops[entry]

    monkeypatch.setattr("workers.runtime.runtime.build_loop", build_loop)
    store = RuntimeStore()
    settings = Settings(worker_models="a,a@int8")
    rt = WorkerRuntime(settings, Observer(), app=Celery("test"), store=store)  # type: ignore[arg-type]
    assert rt.entries() == ["a", "a@int8"]

    def routed(version: str | None) -> WorkItem:
        return WorkItem(request=InferenceRequest(task="embed", model="a", inputs="x"), version=version)

    counts = rt.serve([routed(None), routed("int8digest"), routed("fp32digest"), routed("elsewhere")])
    assert counts == {"done": 3, "failed": 1}
    assert [len(items) for items, _ in loops["a"].submitted] == [1, 1]  # default queue, and pinned
    assert [len(items) for items, _ in loops["a@int8"].submitted] == [1]
    (failed,) = store.written
    assert failed.error is not None and failed.error.code is ErrorCode.MODEL_UNAVAILABLE
    assert "elsewhere" in failed.error.message
    assert rt.served_versions() == ["a@fp32digest", "a@int8digest"]
    assert rt.version_queues() == ["inferq.model.a.v.fp32digest", "inferq.model.a.v.int8digest"]
