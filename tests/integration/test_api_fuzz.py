"""Schemathesis against the live result API's own OpenAPI document.

Every operation gets generated requests (bodies, ids, query strings): no 5xx, only documented
status codes and content types, and every response matches its declared schema. One check is left
out: "schema-valid data must be accepted". The contract validates beyond JSON Schema on purpose
(the model must be in the catalogue and serve the task; input counts and lengths are limits from
settings), and those refusals are the documented 422 with a typed code, which the test asserts.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ops.stack import Stack
from schemas.errors import ErrorCode
from schemas.settings import Settings


def test_every_operation_answers_as_documented(stack: Stack, settings: Settings) -> None:
    base = f"http://{settings.api_host}:{settings.api_port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {"/v1/requests", "/v1/results/{request_id}", "/v1/models"}
    for op in operations:

        @given(case=op.as_strategy())
        @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call_and_validate(base_url=base, excluded_checks=[positive_data_acceptance])
            if response.status_code == 422:
                assert ErrorCode(response.json()["error"]["code"])

        check()
