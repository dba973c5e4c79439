"""Celery messages written by orjson read back as kombu's json wrote them; both are accepted."""

from __future__ import annotations

import pytest
from kombu.serialization import dumps, loads

from schemas.messages import InferenceRequest, Timings
from schemas.settings import Settings
from schemas.work import Source, WorkItem
from workers.transport.app import make_app
from workers.transport.serializer import CONTENT_TYPE, NAME


def body() -> list:
    item = WorkItem(
        request=InferenceRequest(
            request_id="fixed-request-id-0001",
            task="embed",
            model="echo-384",
            inputs=["é ü 😀", "x" * 50],
            tenant="t",
        ),
        timings=Timings(published_ms=1763910000000.125, received_ms=1e-7, queued_ms=0.1),
        source=Source(topic="inferq.requests", partition=3, offset=2**62, key="k"),
    ).wire()
    return [[[item]], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_orjson_messages_read_back_equal_to_json_ones() -> None:
    make_app(Settings())  # registers the serializer
    content_type, encoding, data = dumps(body(), serializer=NAME)
    assert content_type == CONTENT_TYPE
    _, _, as_json = dumps(body(), serializer="json")
    ours = loads(data, content_type, encoding, accept=[CONTENT_TYPE])
    theirs = loads(as_json, "application/json", "utf-8", accept=["application/json"])
    assert ours == theirs == body()
    assert WorkItem.parse(ours[0][0][0]) == WorkItem.parse(body()[0][0][0])


@pytest.mark.parametrize(("setting", "written"), [("orjson", NAME), ("json", "json")])
def test_workers_accept_both_whatever_they_write(setting: str, written: str) -> None:
    app = make_app(Settings(transport_serializer=setting))
    assert app.conf.task_serializer == written
    assert set(app.conf.accept_content) == {"json", NAME}
