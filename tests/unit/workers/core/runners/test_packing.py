"""Embeddings written without a Python float per value are byte for byte what pydantic wrote."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from schemas import results
from schemas.messages import (
    EmbeddingEncoding,
    EmbeddingOutput,
    InferenceRequest,
    InferenceResult,
    PackedFloats,
    ResultStatus,
)
from workers.core.runners.packing import embedding_output, float_json

SPECIAL = [
    1e-7,
    -0.0,
    0.0,
    0.1,
    1.0,
    -1.0,
    1e-45,
    3.4028235e38,
    1.17549435e-38,
    1e16,
    1e-5,
    1e-4,
    1e21,
    2**-149,
]


def vectors() -> list[np.ndarray]:
    """Gaussian rows at many scales, the special values, and random float32 bit patterns."""
    rng = np.random.default_rng(17)
    rows = [np.array(SPECIAL, dtype=np.float32), np.array([np.nan, np.inf, -np.inf, 2.5], dtype=np.float32)]
    for scale in (1.0, 1e-3, 1e-7, 1e-30, 1e3, 1e20):
        rows += [(rng.standard_normal(384) * scale).astype(np.float32) for _ in range(40)]
    bits = rng.integers(0, 2**32, size=384 * 200, dtype=np.uint64).astype(np.uint32).view(np.float32)
    rows += [bits[i : i + 384] for i in range(0, len(bits), 384)]
    return rows


def old_json(row: np.ndarray) -> str:
    """What workers wrote before: pydantic over a Python float per value."""
    return EmbeddingOutput(embedding=[float(x) for x in row]).model_dump_json()


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # signalling NaNs of the bit patterns
def test_float_json_is_pydantic_byte_for_byte_on_many_vectors() -> None:
    for row in vectors():
        expected = old_json(row)
        assert '{"kind":"embedding","embedding":' + float_json(row) + "}" == expected
        assert embedding_output(row, None).model_dump_json() == expected  # slow path unpacks the same


def result_of(outputs: list[EmbeddingOutput], tenant: str | None = "acme") -> InferenceResult:
    request = InferenceRequest(
        request_id="fixed-request-id-0001",
        task="embed",
        model="echo-384",
        inputs=["a"] * len(outputs),
        tenant=tenant,
    )
    timings = {"queued_ms": 1.5, "batch_start_ms": 2.0, "done_ms": 3.25, "batch_size": 2, "batch_id": "b"}
    return results.result(request, ResultStatus.DONE, timings, model_version="v", outputs=outputs)


@pytest.mark.parametrize("tenant", ["acme", None])
def test_result_json_is_the_old_result_byte_for_byte(tenant: str | None) -> None:
    rows = vectors()[:30]
    packed = result_of([embedding_output(r, None) for r in rows], tenant)
    old = result_of([EmbeddingOutput(embedding=[float(x) for x in r]) for r in rows], tenant)
    assert results.result_json(packed) == old.model_dump_json() == packed.model_dump_json()
    finite = [r for r in rows if np.isfinite(r).all()]  # a non-finite value is written null, as before
    back = InferenceResult.model_validate_json(
        results.result_json(result_of([embedding_output(r, None) for r in finite]))
    )
    assert (
        back.outputs == result_of([EmbeddingOutput(embedding=[float(x) for x in r]) for r in finite]).outputs
    )


def test_results_without_packed_outputs_are_dumped_as_before() -> None:
    plain = result_of([EmbeddingOutput(embedding=[0.5, -0.0])])
    assert results.result_json(plain) == plain.model_dump_json()


@pytest.mark.parametrize(
    ("encoding", "dtype"), [(EmbeddingEncoding.BASE64, "<f4"), (EmbeddingEncoding.BASE64_F16, "<f2")]
)
def test_base64_encodings_hold_the_little_endian_bytes(encoding: EmbeddingEncoding, dtype: str) -> None:
    row = np.random.default_rng(3).standard_normal(384).astype(np.float32)
    out = embedding_output(row, encoding)
    doc = json.loads(results.result_json(result_of([out])))["outputs"][0]
    assert doc["encoding"] == encoding.value and set(doc) == {"kind", "embedding", "encoding"}
    decoded = np.frombuffer(base64.b64decode(doc["embedding"]), dtype=dtype)
    assert np.array_equal(decoded, row.astype(dtype))


def test_packed_floats_read_back_as_floats() -> None:
    assert PackedFloats("[0.1,-0.0,1e-7]").floats() == [0.1, -0.0, 1e-7]


@pytest.mark.parametrize("encoding", [None, EmbeddingEncoding.BASE64, EmbeddingEncoding.BASE64_F16])
def test_every_encoding_reads_back_as_the_floats_after_a_trip_through_json(encoding) -> None:
    row = np.random.default_rng(5).standard_normal(384).astype(np.float32)
    stored = results.result_json(result_of([embedding_output(row, encoding)]))
    (out,) = InferenceResult.model_validate_json(stored).outputs or []
    assert isinstance(out, EmbeddingOutput)
    dtype = "<f2" if encoding is EmbeddingEncoding.BASE64_F16 else "<f4"
    assert out.floats() == [float(x) for x in row.astype(dtype)]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"task": "embed", "encoding": "base85"}, "encoding"),
        ({"task": "embed", "encoding": ["base64"]}, "encoding"),
        (
            {"task": "classify", "model": "minilm-intent", "encoding": "base64"},
            "encoding is for task 'embed'",
        ),
    ],
)
def test_an_unknown_or_misplaced_encoding_is_a_validation_error(fields, why) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=why):
        InferenceRequest.model_validate({"model": "echo-384", "inputs": "x", **fields})


@pytest.mark.parametrize("text", ["not base64!", "AAA", "AAAAAAA="])
def test_a_damaged_base64_embedding_is_a_value_error(text: str) -> None:
    out = EmbeddingOutput(embedding=text, encoding=EmbeddingEncoding.BASE64)
    with pytest.raises(ValueError, match=r"base64|bytes"):
        out.floats()


def test_the_default_request_wire_form_is_unchanged() -> None:
    request = InferenceRequest(request_id="fixed-request-id-0001", task="embed", model="echo-384", inputs="x")
    assert "encoding" not in request.wire_json()
    assert (
        '"encoding":"base64"' in request.model_copy(update={"encoding": EmbeddingEncoding.BASE64}).wire_json()
    )


@pytest.mark.parametrize("encoding", [None, EmbeddingEncoding.BASE64, EmbeddingEncoding.BASE64_F16])
def test_a_non_finite_embedding_is_stored_readable(encoding) -> None:
    """A model that overflows (fp16 on a GPU) writes NaN or infinity; JSON has neither, so a float
    array holds ``null`` there (pydantic's form, and orjson's). The stored result must still read:
    an unreadable one failed every reader of it (the API, client.wait) with a ValidationError."""
    row = np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)
    for out in (embedding_output(row, encoding), EmbeddingOutput(embedding=[float(x) for x in row])):
        stored = results.result_json(result_of([out]))
        (back,) = InferenceResult.model_validate_json(stored).outputs or []
        assert isinstance(back, EmbeddingOutput)
        values = back.floats()
        assert np.isnan(values[0]) and values[3] == 0.5
        if encoding is not None and out.encoding is not None:  # bytes keep the infinities
            assert values[1:3] == [float("inf"), float("-inf")]


def test_a_non_finite_classification_score_is_stored_readable() -> None:
    from schemas.messages import ClassifyOutput, LabelScore

    out = ClassifyOutput(labels=[LabelScore(label="a", score=float("nan")), LabelScore(label="b", score=0.5)])
    stored = result_of([EmbeddingOutput(embedding=[0.0])]).model_copy(update={"outputs": [out]})
    (back,) = InferenceResult.model_validate_json(results.result_json(stored)).outputs or []
    assert isinstance(back, ClassifyOutput)
    assert np.isnan(back.labels[0].score) and back.labels[1].score == 0.5


@pytest.mark.parametrize("text", ["é" * 8, "AAAA\n", "A" * 5 + "==="])
def test_hostile_base64_text_is_a_value_error(text: str) -> None:
    out = EmbeddingOutput(embedding=text, encoding=EmbeddingEncoding.BASE64_F16)
    with pytest.raises(ValueError):
        out.floats()
