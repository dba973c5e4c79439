"""Turn raw Kafka bytes into an :class:`InferenceRequest`, or a typed :class:`InvalidRequest`.

Checks, in order: size, UTF-8, JSON object, schema version, the model's fields, the catalogue
(model exists and serves the task), then the operator's limits from settings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from schemas.catalog import lookup
from schemas.errors import ErrorCode, InvalidRequest
from schemas.explain import explain
from schemas.messages import REQUEST_ID_PATTERN, SCHEMA_VERSION, InferenceRequest
from schemas.settings import Settings

_ID = re.compile(REQUEST_ID_PATTERN)


def parse_request(raw: bytes | None, settings: Settings) -> InferenceRequest:
    """Decode and validate one message; raises :class:`InvalidRequest` with a precise code."""
    if raw is None:
        raise InvalidRequest("message has no value (tombstone)", code=ErrorCode.INVALID_JSON)
    if len(raw) > settings.kafka_max_message_bytes:
        raise InvalidRequest(
            f"message is {len(raw)} bytes; the limit is {settings.kafka_max_message_bytes}",
            code=ErrorCode.MESSAGE_TOO_LARGE,
            hint="split the inputs over several requests",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(
            f"message is not UTF-8: {e}",
            code=ErrorCode.INVALID_ENCODING,
            hint="encode the JSON message as UTF-8",
        ) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequest(
            f"message is not JSON: {e}",
            code=ErrorCode.INVALID_JSON,
            hint="publish one JSON object per message",
        ) from e
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"message is JSON {type(data).__name__}, not an object", code=ErrorCode.INVALID_JSON
        )
    return validate_request(data, settings)


def validate_request(data: dict[str, Any], settings: Settings) -> InferenceRequest:
    """Validate a decoded JSON object (also used by the HTTP API)."""
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InvalidRequest(
            f"schema_version is {version!r}; this server speaks {SCHEMA_VERSION}",
            code=ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
            hint=f'set "schema_version": {SCHEMA_VERSION}',
        )
    try:
        request = InferenceRequest.model_validate(data)
    except ValidationError as e:
        message, errors = explain(e.errors())
        raise InvalidRequest(message, detail=errors) from e
    return check_request(request, settings)


def check_request(request: InferenceRequest, settings: Settings) -> InferenceRequest:
    """Checks beyond the schema: the catalogue and the operator's limits."""
    lookup(request.model, request.task)
    texts = request.texts()
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(texts)} inputs; the limit is {settings.max_inputs_per_request}",
            hint="split the inputs over several requests",
        )
    for i, t in enumerate(texts):
        if len(t) > settings.max_text_chars:
            raise InvalidRequest(
                f"inputs[{i}] has {len(t)} characters; the limit is {settings.max_text_chars}"
            )
    wanted = request.generation.max_new_tokens if request.generation else 0
    if wanted > settings.generate_max_new_tokens:
        raise InvalidRequest(
            f"generation.max_new_tokens is {wanted}; the limit is {settings.generate_max_new_tokens}",
            hint="ask for fewer tokens (INFERQ_GENERATE_MAX_NEW_TOKENS sets the limit)",
        )
    return request


def salvage_request_id(raw: bytes | None) -> str | None:
    """The request id of an invalid message, where one can be read, so its sender gets an answer."""
    try:
        data = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    return readable_request_id(data)


def readable_request_id(data: object) -> str | None:
    """``data["request_id"]`` when ``data`` is an object holding a well-formed request id."""
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and _ID.match(rid) else None
