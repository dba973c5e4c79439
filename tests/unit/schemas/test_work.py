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
    with pytest.raises(TypeError):  # a malformed item (internal_error), as workers always answered it
        WorkItem.parse({"request": REQ.wire_dict(), "timings": "not a dict"})
    with pytest.raises(ValidationError):  # the request first: a newer intake (validation_error)
        WorkItem.parse({"request": {**REQ.wire_dict(), "from_the_future": 1}, "timings": "not a dict"})
    with pytest.raises(ValidationError):  # a timing this worker does not know
        WorkItem.parse({"request": REQ.wire_dict(), "timings": {"from_the_future_ms": 1}})


@pytest.mark.parametrize("timings", [None, {}, [], "", 0])
def test_empty_timings_are_none_known_as_workers_always_read_them(timings: object) -> None:
    assert WorkItem.parse({"request": REQ.wire_dict(), "timings": timings}).timings == Timings()


@pytest.mark.parametrize(
    "source",
    ["not an object", [1, 2], {"topic": 5, "partition": "x", "offset": [], "key": 7}, {"partition": None}],
)
def test_a_source_that_cannot_be_read_is_unknown_and_the_request_is_still_served(source: object) -> None:
    """The source only places a dead letter: workers before the typed item served such a request
    (and gave its letter no coordinates); failing it would answer a good request ``failed``."""
    item = WorkItem.parse({"request": REQ.wire_dict(), "timings": dict(TIMINGS), "source": source})
    assert item.request == REQ and item.timings == Timings(**TIMINGS)
    assert item.source is None if not isinstance(source, dict) else item.source == Source()


def test_the_readable_fields_of_a_source_are_kept() -> None:
    raw = {"topic": "inferq.requests", "partition": "x", "offset": 41, "key": 7}
    item = WorkItem.parse({"request": REQ.wire_dict(), "source": raw})
    assert item.source == Source(topic="inferq.requests", offset=41)


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
