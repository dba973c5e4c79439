"""Chat requests on the wire: ``messages`` instead of ``inputs``, and what a hostile producer may
try with them (wrong roles, types, keys, sizes, both or neither of the two fields)."""

from __future__ import annotations

import pytest

from schemas.errors import ErrorCode, InvalidRequest
from schemas.messages import MAX_CHAT_CHARS, MAX_CHAT_MESSAGES, InferenceRequest, Role
from schemas.settings import Settings
from schemas.validation import validate_request


def wire(**fields) -> dict:
    return {"schema_version": 1, "task": "generate", "model": "smollm2-135m-instruct", **fields}


def test_a_conversation_is_a_request_with_one_input():
    req = validate_request(
        wire(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]),
        Settings(),
    )
    assert [m.role for m in req.messages] == [Role.SYSTEM, Role.USER]
    assert req.texts() == ["hi"] and req.inputs is None
    assert InferenceRequest.model_validate_json(req.wire_json()) == req


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"messages": []}, "at least 1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 5}]}, "string"),
        ({"messages": [{"role": "user", "content": ["a"]}]}, "string"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"role": "user", "content": "x", "name": "root"}]}, "name"),
        ({"messages": {"role": "user", "content": "x"}}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "inputs": "x"}, "exactly one"),
        ({}, "exactly one"),
        ({"messages": [{"role": "user", "content": "x"}] * (MAX_CHAT_MESSAGES + 1)}, "at most"),
        ({"messages": [{"role": "user", "content": "x" * (MAX_CHAT_CHARS // 2 + 1)}] * 2}, "characters"),
        (
            {"task": "embed", "model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "x"}]},
            "generate",
        ),
    ],
)
def test_malformed_conversations_are_refused_with_a_validation_error(fields, says):
    with pytest.raises(InvalidRequest) as e:
        validate_request(wire(**fields), Settings())
    assert e.value.code is ErrorCode.VALIDATION_ERROR
    assert says in (e.value.message + str(e.value.detail))


def test_the_operators_character_limit_counts_the_whole_conversation():
    turns = [{"role": "user", "content": "x" * 60}] * 2
    with pytest.raises(InvalidRequest, match="120 characters in all; the limit is 100"):
        validate_request(wire(messages=turns), Settings(max_text_chars=100))
    assert validate_request(wire(messages=turns[:1]), Settings(max_text_chars=100))
