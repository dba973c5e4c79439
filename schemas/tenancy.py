"""Who a Kafka request belongs to: the tenant a record claims, checked against what authenticates it.

Over HTTP a tenant is its API key. Over Kafka anyone who can write to the requests topic can write
``"tenant": "other-tenant"`` in a request, so the claim means something only when the deployment
ties it to an authenticated fact. ``INFERQ_KAFKA_TENANT_AUTH`` chooses how:

- ``trust`` (the default, and what the local stack runs): the deployment trusts every producer that
  can reach the requests topic (the broker's ACLs decide who can); the tenant in the body is taken
  as it is. Use it only where every producer is yours.
- ``signed``: every record carries the headers ``inferq-tenant`` (the tenant), ``inferq-signed-at``
  (epoch milliseconds, ASCII digits) and ``inferq-signature``: hex HMAC-SHA256 of
  ``<signed-at> "\n" <record value>``, keyed with that tenant's secret from
  ``INFERQ_KAFKA_TENANT_KEYS`` (``tenant:hexkey,...``). A record without them, for a tenant with no
  key, with a signature that does not match, or signed longer ago than the result TTL (or more than
  ``CLOCK_SKEW_MS`` ahead) is refused ``unauthorized``; a signed record whose body names another
  tenant is refused ``forbidden``. :class:`producers.client.InferqClient` signs when it is given its
  tenant's key (``tenant_key``).

Why the time is signed: anyone who can read the topic can copy a signed record. Within the result
TTL a copy is the same request (same id, same content): the store recognises it and nothing runs
again. Past the TTL the store has forgotten it, so the signature must have expired too.

A refused record is dead-lettered without an answer: its request id was chosen by an unauthenticated
writer, and a ``failed`` result under it would let anyone squat another tenant's ids.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping

from schemas.errors import ConfigurationError, Forbidden, Unauthorized
from schemas.messages import InferenceRequest
from schemas.settings import Settings

TENANT_HEADER = "inferq-tenant"
SIGNED_AT_HEADER = "inferq-signed-at"
SIGNATURE_HEADER = "inferq-signature"
CLOCK_SKEW_MS = 300_000  # a signature dated this far ahead of the intake's clock is still taken
KEY_MIN_BYTES = 16  # an HMAC key shorter than this is guessable

Headers = Iterable[tuple[str, bytes | None]]


def sign(value: bytes, key: bytes, signed_at_ms: int) -> str:
    """The signature of a record value signed at ``signed_at_ms`` (epoch ms): hex HMAC-SHA256 of
    ``<signed_at_ms>\n<value>`` keyed with the tenant's secret."""
    return hmac.new(key, b"%d\n" % signed_at_ms + value, hashlib.sha256).hexdigest()


def signed_headers(
    tenant: str, key: bytes, value: bytes, signed_at_ms: int | None = None
) -> list[tuple[str, bytes]]:
    """The headers a producer adds to a record of ``tenant`` (signed with ``key``, now unless
    ``signed_at_ms`` is given) under ``signed``."""
    at = int(time.time() * 1000) if signed_at_ms is None else signed_at_ms
    return [
        (TENANT_HEADER, tenant.encode()),
        (SIGNED_AT_HEADER, str(at).encode()),
        (SIGNATURE_HEADER, sign(value, key, at).encode()),
    ]


def parse_keys(spec: str) -> dict[str, bytes]:
    """``tenant:hexkey,...`` → {tenant: key bytes}; ConfigurationError says which entry is wrong
    (never echoing a key)."""
    keys: dict[str, bytes] = {}
    for i, entry in enumerate(e.strip() for e in spec.split(",")):
        if not entry:
            continue
        tenant, sep, hexkey = entry.partition(":")
        try:
            key = bytes.fromhex(hexkey.strip())
        except ValueError:
            key = b""
        if not sep or not tenant.strip() or len(key) < KEY_MIN_BYTES:
            raise ConfigurationError(
                f"INFERQ_KAFKA_TENANT_KEYS entry {i + 1} is not `tenant:hexkey` with a key of at least "
                f"{KEY_MIN_BYTES} bytes",
                hint="make a key with `python -c 'import secrets; print(secrets.token_hex(32))'`",
            )
        keys[tenant.strip()] = key
    return keys


class TenantAuth:
    """Checks the tenant of each Kafka record against the configured :data:`Settings.kafka_tenant_auth`."""

    def __init__(
        self,
        mode: str,
        keys: Mapping[str, bytes],
        max_age_ms: float = float("inf"),
        clock_ms: Callable[[], float] = lambda: time.time() * 1000.0,
    ) -> None:
        if mode == "signed" and not keys:
            raise ConfigurationError(
                "INFERQ_KAFKA_TENANT_AUTH=signed but INFERQ_KAFKA_TENANT_KEYS holds no key",
                hint="give each tenant a key (`tenant:hexkey,...`), or set INFERQ_KAFKA_TENANT_AUTH=trust",
            )
        self.mode = mode
        self._keys = dict(keys)
        self.max_age_ms = max_age_ms  # older signatures are refused: the store no longer knows the id
        self._clock_ms = clock_ms

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantAuth:
        keys = parse_keys(settings.kafka_tenant_keys.get_secret_value())
        return cls(settings.kafka_tenant_auth, keys, max_age_ms=settings.result_ttl_s * 1000.0)

    def check(self, value: bytes | None, headers: Headers | None, request: InferenceRequest) -> None:
        """Raise :class:`Unauthorized` / :class:`Forbidden` unless the record may act as
        ``request.tenant``. Cost: one HMAC over the value (already bounded by the message size)."""
        if self.mode == "trust":
            return
        if (request.tenant or "") != self._signer(value, headers):
            raise Forbidden(
                "the request names a tenant other than the one that signed it",
                hint="set the request's `tenant` to your own tenant (the one your key belongs to)",
            )

    def may_answer(self, value: bytes | None, headers: Headers | None, tenant: str | None) -> bool:
        """Whether a record that is not a valid request may be answered under ``tenant`` (the one its
        body names): always under ``trust``; under ``signed`` only when that tenant signed it, so an
        unauthenticated writer cannot squat another tenant's ids with ``failed`` answers."""
        if self.mode == "trust":
            return True
        try:
            return tenant is not None and self._signer(value, headers) == tenant
        except Unauthorized:
            return False

    def _signer(self, value: bytes | None, headers: Headers | None) -> str:
        """The tenant whose key signed the record; :class:`Unauthorized` when none did."""
        found = _headers(headers)
        claimed, signature = found.get(TENANT_HEADER), found.get(SIGNATURE_HEADER)
        if claimed is None or signature is None:
            raise Unauthorized(
                f"the record carries no `{TENANT_HEADER}` and `{SIGNATURE_HEADER}` headers "
                "(INFERQ_KAFKA_TENANT_AUTH=signed)",
                hint="publish with InferqClient and your tenant key, or sign the value with HMAC-SHA256",
            )
        raw_at = found.get(SIGNED_AT_HEADER, b"")
        if not (raw_at.isdigit() and len(raw_at) <= 16):
            raise Unauthorized(
                f"the record carries no `{SIGNED_AT_HEADER}` header (epoch milliseconds)",
                hint="sign with InferqClient, or add the signing time and sign `<signed-at>\\n<value>`",
            )
        signed_at = int(raw_at)
        tenant = claimed.decode("utf-8", "replace")
        key = self._keys.get(tenant)
        # compare even for an unknown tenant, so the refusal takes the same time either way
        expected = sign(value or b"", key if key is not None else b"\0" * 32, signed_at).encode()
        if not hmac.compare_digest(expected, signature.strip().lower()) or key is None:
            raise Unauthorized(
                "the record's signature does not match its tenant's key",
                hint="sign `<signed-at>\\n<record value>` with your tenant's key (HMAC-SHA256, hex)",
            )
        age_ms = self._clock_ms() - signed_at
        if age_ms > self.max_age_ms or age_ms < -CLOCK_SKEW_MS:
            raise Unauthorized(
                f"the record was signed {age_ms / 1000.0:.0f} s ago; signatures are taken for "
                f"{self.max_age_ms / 1000.0:.0f} s (INFERQ_RESULT_TTL_S) and up to "
                f"{CLOCK_SKEW_MS / 1000.0:.0f} s ahead",
                hint="publish a fresh request (a copy of an old record is a replay); check the clocks",
            )
        return tenant


def _headers(headers: Headers | None) -> dict[str, bytes]:
    """The first value of each header (a repeated header cannot override the first one)."""
    out: dict[str, bytes] = {}
    for name, value in headers or ():
        if value is not None and name not in out:
            out[name] = value
    return out
