"""Turn raw Kafka bytes into an :class:`InferenceRequest`, or a typed :class:`InvalidRequest`.

Checks, in order: size, UTF-8, JSON object, schema version, the model's fields, the catalogue
(model exists and serves the task), then the operator's limits from settings.

Decoding is strict JSON (RFC 8259) at a bounded cost, whatever the bytes: nesting past Python's
recursion limit (``RecursionError`` in the decoder, about 1,000 levels), integer literals over
``MAX_INT_DIGITS`` digits (Python refuses past 4,300 and converts quadratically below), numbers
out of a double's range, ``NaN``/``Infinity`` (not JSON) and lone UTF-16 surrogates (``"\\ud800"``:
not encodable as UTF-8, so not storable or forwardable) are all :class:`InvalidRequest` with
``invalid_json``. Nothing else escapes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from schemas.callbacks import check_callback_url
from schemas.catalog import lookup
from schemas.errors import ErrorCode, InvalidRequest
from schemas.explain import explain
from schemas.messages import NAME_PATTERN, REQUEST_ID_PATTERN, SCHEMA_VERSION, InferenceRequest
from schemas.replies import check_request_replies
from schemas.settings import Settings

_ID = re.compile(REQUEST_ID_PATTERN)
_TENANT = re.compile(NAME_PATTERN)

MAX_INT_DIGITS = 64  # the widest integer field (a seed, 2**63 - 1) has 19 digits
# a \u escape of a UTF-16 surrogate: only then can a decoded string hold a lone one
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOT_JSON = "publish one JSON object per message (RFC 8259: no NaN, no lone surrogates)"


def _refuse(what: str) -> InvalidRequest:
    return InvalidRequest(f"message is not JSON: {what}", code=ErrorCode.INVALID_JSON, hint=_NOT_JSON)


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise _refuse(f"an integer literal has {len(literal)} digits; the most is {MAX_INT_DIGITS}")
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _refuse(f"the number {literal[:40]!r} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise _refuse(f"{name} is not a JSON value")


# one decoder for every record: ``json.loads`` with hooks builds a new decoder (and its scanner) per call
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)


def decode_json(raw: bytes) -> Any:
    """Strict, bounded JSON decoding of UTF-8 bytes; raises :class:`InvalidRequest` only."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(
            f"message is not UTF-8: {e}",
            code=ErrorCode.INVALID_ENCODING,
            hint="encode the JSON message as UTF-8",
        ) from e
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding, word for word
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        data = _DECODER.decode(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _refuse(str(e)[:200] or type(e).__name__) from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError, RecursionError):
            raise _refuse("a string holds a lone UTF-16 surrogate") from None
    return data


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
    data = decode_json(raw)
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
    inputs = data.get("inputs")
    if isinstance(inputs, list) and len(inputs) > settings.max_inputs_per_request:
        # said before the schema runs: it would report every bad text of the list (seconds for the
        # hundreds of thousands a 1 MB record holds) before the operator's limit refused them all
        raise _too_many_inputs(len(inputs), settings)
    try:
        request = InferenceRequest.model_validate(data)
    except ValidationError as e:
        message, errors = explain(e.errors())
        # at most 20 (one per bad input of a long list): the detail goes into results and letters
        raise InvalidRequest(message, detail=errors[:20]) from e
    return check_request(request, settings)


def check_request(request: InferenceRequest, settings: Settings) -> InferenceRequest:
    """Checks beyond the schema: the catalogue, the operator's limits and the webhook policy."""
    lookup(request.model, request.task)
    texts = request.texts()
    if len(texts) > settings.max_inputs_per_request:
        raise _too_many_inputs(len(texts), settings)
    for i, t in enumerate(texts):
        if len(t) > settings.max_text_chars:
            raise InvalidRequest(
                f"inputs[{i}] has {len(t)} characters; the limit is {settings.max_text_chars}"
            )
    chars = sum(len(m.content) for m in request.messages or [])
    if chars > settings.max_text_chars:
        raise InvalidRequest(
            f"messages hold {chars} characters in all; the limit is {settings.max_text_chars}",
            hint="shorten the conversation (drop or summarise early turns; INFERQ_MAX_TEXT_CHARS)",
        )
    wanted = request.generation.max_new_tokens if request.generation else 0
    if wanted > settings.generate_max_new_tokens:
        raise InvalidRequest(
            f"generation.max_new_tokens is {wanted}; the limit is {settings.generate_max_new_tokens}",
            hint="ask for fewer tokens (INFERQ_GENERATE_MAX_NEW_TOKENS sets the limit)",
        )
    if request.callback_url is not None:  # no DNS here: addresses are vetted again at send time
        check_callback_url(request.callback_url, settings, request.tenant)
    check_request_replies(request, settings)
    return request


def _too_many_inputs(count: int, settings: Settings) -> InvalidRequest:
    return InvalidRequest(
        f"{count} inputs; the limit is {settings.max_inputs_per_request}",
        hint="split the inputs over several requests",
    )


def salvage(raw: bytes | None) -> tuple[str | None, str | None]:
    """The request id and tenant of a message that is not a valid request, where they can be read
    (so its sender gets an answer, in its tenant's namespace); never raises."""
    try:
        data = decode_json(raw or b"")
    except Exception:  # whatever the bytes: nothing trusted, never an error
        return None, None
    tenant = data.get("tenant") if isinstance(data, dict) else None
    return readable_request_id(data), tenant if isinstance(tenant, str) and _TENANT.match(tenant) else None


def salvage_request_id(raw: bytes | None) -> str | None:
    """The request id of an invalid message, where one can be read (:func:`salvage`)."""
    return salvage(raw)[0]


def readable_request_id(data: object) -> str | None:
    """``data["request_id"]`` when ``data`` is an object holding a well-formed request id."""
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and _ID.match(rid) else None
