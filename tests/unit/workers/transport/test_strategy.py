"""The worker's guard around Celery's strategy: which decoded bodies are a task's (the rest are
rejected as invalid tasks instead of stopping the consumer; on the real worker in
tests/integration/test_celery_hostile.py)."""

from __future__ import annotations

import pytest

from workers.celery_adapter.tasks import infer
from workers.transport.strategy import STRATEGY, protocol_error


@pytest.mark.parametrize(
    "payload",
    [[[1], {}, {}], ([1], {}, None), [[], {"a": 1}, {"callbacks": None}], {"args": [1], "kwargs": {}}],
)
def test_a_task_shaped_body_passes(payload):
    assert protocol_error(payload) is None


@pytest.mark.parametrize(
    "payload",
    [
        *(b"", "", "text", 5, 1.5, None, True, [], [1, 2]),
        *([[1], {}, {}, {}], [1, {}, {}], [[1], [], {}], [[1], {}, 7]),
    ],
)
def test_anything_else_is_refused_with_its_type(payload):
    why = protocol_error(payload)
    assert why is not None and type(payload).__name__ in why


def test_the_worker_task_uses_the_guarded_strategy():
    assert infer.Strategy == STRATEGY


def test_naming_headers_must_be_strings_before_celery_announces_the_task():
    from workers.transport.strategy import header_error

    good = {"id": "a", "task": "inferq.infer", "root_id": "a", "parent_id": None, "retries": 0}
    assert header_error(good) is None
    for bad in ({"root_id": ["x"]}, {"id": 5}, {"task": None}, {"group": {"g": 1}}, {"retries": "many"}):
        assert header_error({**good, **bad}) is not None, bad
    assert header_error(["not", "an", "object"]) is not None
