"""The work item between intake and worker (schemas/work.py): its wire form is the dict intakes
have always sent, so old and new intakes and workers keep speaking during a rolling deploy."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.messages import InferenceRequest, Timings
from schemas.work import Handoff, Source, WorkItem

REQ = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=["a", "b"], tenant="acme")
TIMINGS = {"published_ms": 1.0, "received_ms": 2.0, "queued_ms": 3.0}


def old_item() -> dict:
    """What the intake sent before the work item was typed (workers/intake/service.py at 79c1c79)."""
    source = {"topic": "inferq.requests", "partition": 2, "offset": 41, "key": "k"}
    return {"request": REQ.wire_dict(), "timings": dict(TIMINGS), "source": source}


def test_the_wire_form_is_what_older_intakes_sent_and_older_workers_read() -> None:
    source = Source(topic="inferq.requests", partition=2, offset=41, key="k")
    item = WorkItem(request=REQ, timings=Timings(**TIMINGS), source=source)
    assert item.wire() == old_item()
    json.dumps(item.wire())  # JSON-ready: Celery's serializer is json
    assert "key" not in WorkItem(request=REQ, source=Source(topic="t")).wire()["source"]


def test_items_of_older_intakes_parse() -> None:
    item = WorkItem.parse(old_item())
    assert item.request == REQ and item.timings == Timings(**TIMINGS)
    assert item.source == Source(topic="inferq.requests", partition=2, offset=41, key="k")
    bare = WorkItem.parse({"request": REQ.wire_dict(), "timings": None, "source": None, "later": 1})
    assert bare.source is None and bare.timings == Timings()
    assert WorkItem.parse({"request": REQ.wire_dict()}).request == REQ


def test_what_cannot_be_read_raises_by_kind() -> None:
    with pytest.raises(TypeError):
        WorkItem.parse("not an object")
    with pytest.raises(KeyError):
        WorkItem.parse({"no_request": True})
    with pytest.raises(ValidationError):  # a request from a newer producer
        WorkItem.parse({"request": {**REQ.wire_dict(), "a_field_from_the_future": 1}})
    with pytest.raises(ValidationError):
        WorkItem.parse({"request": REQ.wire_dict(), "timings": "not a dict"})


def test_a_handoff_keeps_its_layout_and_names_its_model_even_when_unreadable() -> None:
    h = Handoff.of("inferq.model.all-MiniLM-L6-v2", 3, WorkItem.parse(old_item()))
    assert json.loads(h.model_dump_json()) == {
        "queue": "inferq.model.all-MiniLM-L6-v2",
        "priority": 3,
        "item": old_item(),
    }
    assert Handoff.model_validate_json(h.model_dump_json()).work().request == REQ
    newer = Handoff(queue="q", priority=0, item={"request": {"model": "m", "from_the_future": 1}})
    assert newer.model == "m"
    with pytest.raises(ValidationError):
        newer.work()
    assert Handoff(queue="q", priority=0, item={"request": "garbage"}).model is None
