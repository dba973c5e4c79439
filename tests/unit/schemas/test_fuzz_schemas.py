"""Property-based fuzzing of the message contract: whatever arrives, the answer is typed.

``parse_request`` (the intake's and the API's gate) must either return a valid request or raise
:class:`InvalidRequest` with a code, for any bytes and any JSON; valid requests and results must
survive a JSON round trip unchanged.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.catalog import CATALOG
from schemas.errors import ErrorCode, InvalidRequest
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus
from schemas.settings import Settings
from schemas.validation import parse_request

SETTINGS = Settings()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.sampled_from([1, 2, 0, "1", None]),
        "request_id": st.text(max_size=40) | st.integers(),
        "task": st.sampled_from(["embed", "classify", "generate", "", None]),
        "model": st.sampled_from([*CATALOG, "nope", ""]),
        "inputs": st.text(max_size=50) | st.lists(st.text(max_size=20), max_size=70) | json_values,
        "tenant": st.text(max_size=20) | st.none(),
        "priority": st.sampled_from(["high", "normal", "low", "urgent", 3]),
        "deadline": st.sampled_from(["2020-01-01T00:00:00Z", "2999-01-01T00:00:00Z", "tomorrow", 5, None]),
        "options": json_values,
    },
)


def _check(raw: bytes) -> None:
    try:
        request = parse_request(raw, SETTINGS)
    except InvalidRequest as e:
        assert isinstance(e.code, ErrorCode) and e.message and e.hint
        return
    assert isinstance(request, InferenceRequest)
    assert InferenceRequest.model_validate_json(request.model_dump_json()) == request


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_get_a_typed_answer(raw):
    _check(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_gets_a_typed_answer(value):
    _check(json.dumps(value).encode())


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(request_like)
def test_request_shaped_json_gets_a_typed_answer(value):
    _check(json.dumps(value).encode())


@settings(max_examples=200)
@given(
    st.sampled_from(list(ResultStatus)),
    st.from_regex(r"[A-Za-z0-9_-]{16,40}", fullmatch=True),
    st.floats(min_value=0, max_value=1e13, allow_nan=False),
)
def test_results_round_trip(status, request_id, published_ms):
    result = InferenceResult(request_id=request_id, status=status, timings={"published_ms": published_ms})
    assert InferenceResult.model_validate_json(result.model_dump_json()) == result
