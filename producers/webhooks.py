"""Checking a webhook from inferq on the receiving side: the signature and the replay window.

The standard library only, so a receiver needs nothing else (copy this file if it does not install
inferq). inferq POSTs a terminal result (the same JSON as the Redis result) with::

    X-Inferq-Timestamp: 1767225600
    X-Inferq-Signature: v1=<hex HMAC-SHA256 of b"1767225600." + body, keyed with the tenant's secret>
    X-Inferq-Request-Id: <the request id>

Use it on the raw body bytes, before parsing them::

    from producers.webhooks import InvalidSignature, verify

    try:
        verify(SECRET, request.headers, raw_body)
    except InvalidSignature as e:
        return 401, str(e)
    result = json.loads(raw_body)

Then deduplicate on the request id: a delivery is retried until the receiver answers 2xx, so the same
result may arrive more than once (the body is the same bytes each time; the timestamp and signature
are new on each try).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Inferq-Signature"
TIMESTAMP_HEADER = "X-Inferq-Timestamp"
REQUEST_ID_HEADER = "X-Inferq-Request-Id"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300.0
MAX_TIMESTAMP_DIGITS = 12


class InvalidSignature(ValueError):
    """The webhook is not from inferq with this secret, or is too old (or too far ahead) to accept."""


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (Unix seconds): ``v1=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify(
    secret: str | bytes,
    headers_or_timestamp: Mapping[str, str] | str | int,
    body: bytes,
    signature: str | None = None,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a webhook; returns its timestamp (Unix seconds), raises :class:`InvalidSignature`.

    ``headers_or_timestamp`` is the request's headers (any mapping, names in any case; the timestamp
    and signature are read from them), or the ``X-Inferq-Timestamp`` value, with ``signature`` the
    ``X-Inferq-Signature`` value. ``body`` is the raw body bytes. The signature is compared in
    constant time; a timestamp more than ``tolerance_s`` seconds from ``now`` (default: the clock)
    is refused, so a recorded webhook cannot be replayed later. A signature header may hold several
    ``v1=`` values separated by commas or spaces (while a secret is rotated): one must match.
    """
    if isinstance(headers_or_timestamp, Mapping):
        stamp = _header(headers_or_timestamp, TIMESTAMP_HEADER)
        signature = _header(headers_or_timestamp, SIGNATURE_HEADER) if signature is None else signature
    else:
        stamp = str(headers_or_timestamp)
    if stamp is None or signature is None:
        raise InvalidSignature(f"the {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header is missing")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > MAX_TIMESTAMP_DIGITS:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is not Unix seconds")
    timestamp = int(stamp)
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise InvalidSignature(
            f"the webhook was signed {clock - timestamp:.0f} s from now; "
            f"at most {tolerance_s:.0f} s is accepted"
        )
    expected = sign(secret, timestamp, body).encode()
    offered = [s.strip().encode() for s in signature.replace(" ", ",").split(",") if s.strip()]
    matched = False
    for candidate in offered[:8]:
        matched |= hmac.compare_digest(candidate, expected)  # every candidate compared: no early exit
    if not matched:
        raise InvalidSignature("the signature does not match this body and secret")
    return timestamp
