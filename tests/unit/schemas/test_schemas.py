import json
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from schemas.export import EXPORTED, SCHEMA_DIR, render
from schemas.messages import (
    REQUEST_ID_PATTERN,
    ClassifyOutput,
    InferenceRequest,
    InferenceResult,
    ResultStatus,
    Task,
    new_request_id,
)


def test_request_round_trips_through_json():
    r = InferenceRequest(
        task="embed",
        model="all-MiniLM-L6-v2",
        inputs=["a", "b"],
        tenant="acme",
        deadline=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    again = InferenceRequest.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.texts() == ["a", "b"]
    assert again.schema_version == 1


def test_single_text_is_a_list_of_one():
    assert InferenceRequest(task="classify", model="m-1", inputs="hello").texts() == ["hello"]


def test_generated_ids_are_unique_and_unguessable():
    import re

    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(REQUEST_ID_PATTERN, i) and len(i) == 24 for i in ids)


@pytest.mark.parametrize(
    "fields",
    [
        {"inputs": []},
        {"inputs": ""},
        {"inputs": [""]},
        {"inputs": 5},
        {"task": "translate"},
        {"schema_version": 2},
        {"request_id": "short"},
        {"request_id": "has spaces in it!!!!"},
        {"model": ""},
        {"top_k": 0},
        {"deadline": "2030-01-01T00:00:00"},  # naive: ambiguous
        {"unexpected": 1},
    ],
)
def test_invalid_requests_are_rejected(fields):
    base = {"task": "embed", "model": "all-MiniLM-L6-v2", "inputs": "hi"}
    with pytest.raises(ValidationError):
        InferenceRequest.model_validate({**base, **fields})


def test_result_outputs_are_discriminated():
    r = InferenceResult.model_validate(
        {
            "request_id": new_request_id(),
            "status": "done",
            "task": "classify",
            "outputs": [{"kind": "classification", "labels": [{"label": "x", "score": 0.9}]}],
        }
    )
    assert isinstance(r.outputs[0], ClassifyOutput)
    assert r.status is ResultStatus.DONE and r.status.terminal and r.task is Task.CLASSIFY
    assert not ResultStatus.QUEUED.terminal


@pytest.mark.parametrize("model", EXPORTED, ids=lambda m: m.__name__)
def test_exported_json_schema_matches_models(model):
    path = SCHEMA_DIR / f"{model.__name__}.json"
    assert path.read_text(encoding="utf-8") == render(model), (
        f"{path} drifted from the model: run `python -m schemas.export` and commit the result"
    )
    assert json.loads(path.read_text())["title"] == model.__name__
