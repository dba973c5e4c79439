"""Validation messages name the real cause, also inside a union (``inputs: str | list[str]``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.explain import explain
from schemas.messages import InferenceRequest


def message_for(**fields: object) -> tuple[str, list[dict[str, object]]]:
    with pytest.raises(ValidationError) as e:
        InferenceRequest.model_validate({"task": "embed", "model": "m", **fields})
    return explain(e.value.errors())


def test_a_bad_item_of_a_list_input_is_named_with_its_index():
    message, detail = message_for(inputs=["a", "b", "c", ""])
    assert message == "inputs.3: String should have at least 1 character"
    assert detail == [
        {"loc": ["inputs", 3], "msg": "String should have at least 1 character", "type": "string_too_short"}
    ]


def test_an_empty_text_is_named_as_such_not_as_a_missing_list():
    message, _ = message_for(inputs="")
    assert message == "inputs: String should have at least 1 character"


def test_a_wrong_type_keeps_the_first_branch_and_other_errors_follow():
    message, detail = message_for(inputs=7, top_k=0)
    assert message.startswith("inputs: Input should be a valid string") and "(and 1 more" in message
    assert [d["loc"] for d in detail] == [["inputs"], ["top_k"]]


def test_plain_field_errors_keep_their_path():
    message, _ = message_for(inputs="x", generation={"stop": [""]}, task="generate")
    assert message == "generation.stop.0: String should have at least 1 character"
