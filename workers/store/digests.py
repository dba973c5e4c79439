"""Digests of a request's content, to tell a redelivery (same content) from a reuse of its id."""

from __future__ import annotations

import hashlib

from schemas.messages import InferenceRequest


def request_digest(request: InferenceRequest) -> str:
    """Digest of a request's content, to tell a redelivery from a reuse of its id."""
    return bytes_digest(request.wire_json().encode())


def bytes_digest(raw: bytes) -> str:
    """:func:`request_digest` of a record's raw bytes (equal when they are the request's wire JSON,
    which is what the API and the producer client publish)."""
    return hashlib.sha256(raw).hexdigest()[:32]
