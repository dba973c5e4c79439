"""Compact embeddings through the whole pipeline: the same vector in every encoding, JSON by default."""

from __future__ import annotations

import json

import httpx

from schemas.messages import EmbeddingEncoding, EmbeddingOutput, ResultStatus
from schemas.naming import result_key, scoped_id

MODEL = "all-MiniLM-L6-v2"


def test_each_encoding_carries_the_same_float32_vector(client, settings):
    text = "compact embeddings travel as bytes"
    ids = {
        encoding: client.submit("embed", MODEL, [text, "a second input"], encoding=encoding)
        for encoding in (None, "float", "base64", "base64-f16")
    }
    client.flush()
    results = client.wait_all(list(ids.values()), timeout_s=60)
    outs = {}
    for encoding, rid in ids.items():
        result = results[rid]
        assert result.status is ResultStatus.DONE and result.outputs and len(result.outputs) == 2
        out = result.outputs[0]
        assert isinstance(out, EmbeddingOutput)
        outs[encoding] = out
    default = outs[None].floats()
    assert len(default) == 384 and outs["float"].floats() == default
    assert outs["base64"].floats() == default  # float32 bytes: exactly the JSON floats' values
    assert max(abs(a - b) for a, b in zip(outs["base64-f16"].floats(), default, strict=True)) < 1e-3
    # the stored JSON: floats by default with no encoding field; base64 text with its encoding
    raw = client.store.client.hget(result_key(settings, scoped_id(None, ids[None])), "body")
    first = json.loads(raw)["outputs"][0]
    assert set(first) == {"kind", "embedding"} and isinstance(first["embedding"], list)
    packed = json.loads(
        client.store.client.hget(result_key(settings, scoped_id(None, ids["base64"])), "body")
    )
    assert packed["outputs"][0]["encoding"] == EmbeddingEncoding.BASE64.value
    assert len(packed["outputs"][0]["embedding"]) == 4 * 384 * 4 // 3


def test_an_unknown_or_misplaced_encoding_is_a_typed_422(stack, settings):
    url = f"http://{settings.api_host}:{settings.api_port}/v1/requests"
    for task, model, encoding in (("embed", MODEL, "base85"), ("classify", "minilm-intent", "base64")):
        body = {"schema_version": 1, "task": task, "model": model, "inputs": "x", "encoding": encoding}
        answer = httpx.post(url, json=body, timeout=30)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "validation_error", answer.text
