"""Hostile chat and encoding fields over the HTTP API and Kafka, on the real stack: refused at the
door with a typed 422 where the schema can tell, else answered ``failed`` with a typed error by the
worker (a conversation whose rendered prompt is over the model's limit), never left ``queued``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from schemas.errors import ErrorCode
from schemas.messages import ResultStatus

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def api(stack, settings):
    with httpx.Client(base_url=f"http://{settings.api_host}:{settings.api_port}", timeout=10) as c:
        yield c


def chat_body(**over: Any) -> dict[str, Any]:
    return {"schema_version": 1, "task": "generate", "model": MODEL, **over}


@pytest.mark.parametrize(
    "body",
    [
        chat_body(messages=None),
        chat_body(messages=[None]),
        chat_body(messages=[{"role": None, "content": "x"}]),
        chat_body(messages=[{"role": "user", "content": None}]),
        chat_body(messages=[{"role": "user", "content": {"text": "x"}}]),
        chat_body(messages=[{"role": "USER", "content": "x"}]),
        chat_body(messages=[{"role": "user", "content": "x"}], inputs="x"),
        chat_body(messages=[{"role": "user", "content": "x"}] * 65),
        chat_body(messages=[{"role": "user", "content": "x"}], encoding="base64"),
        chat_body(task="embed", model="all-MiniLM-L6-v2", messages=[{"role": "user", "content": "x"}]),
        chat_body(task="embed", model="all-MiniLM-L6-v2", inputs="x", encoding="BASE64"),
        chat_body(task="embed", model="all-MiniLM-L6-v2", inputs="x", encoding=["base64"]),
        chat_body(task="embed", model="all-MiniLM-L6-v2", inputs="x", encoding=None, extra=1),
        chat_body(task="classify", model="minilm-intent", inputs="x", encoding="base64-f16"),
    ],
)
def test_malformed_chat_and_encoding_fields_are_a_typed_422(api, body):
    answer = api.post("/v1/requests", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"


def test_a_conversation_rendered_past_the_prompt_limit_fails_typed_over_http_and_kafka(api, client, settings):
    # within the character limit, but some 64 x 70 tokens once rendered: past the prompt limit
    turn = "word " * 60
    messages = [{"role": "user" if i % 2 else "assistant", "content": turn} for i in range(64)]
    messages[-1]["role"] = "user"
    assert sum(len(m["content"]) for m in messages) <= settings.max_text_chars
    answer = api.post("/v1/requests", json=chat_body(messages=messages))
    assert answer.status_code == 202, answer.text
    by_kafka = client.chat(MODEL, [(m["role"], m["content"]) for m in messages])
    for rid in (answer.json()["request_id"], by_kafka):
        res = client.wait(rid, timeout_s=120)
        assert res.status is ResultStatus.FAILED and res.error is not None
        assert res.error.code is ErrorCode.VALIDATION_ERROR
        assert "rendered with the chat template" in res.error.message
