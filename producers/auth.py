"""API keys of the result API: one or more per tenant, stored only as SHA-256 digests.

Keys are 256-bit random tokens (:func:`new_key`), so a plain SHA-256 digest is enough to store
them (no salt or slow hash needed: nothing to brute-force). ``INFERQ_API_KEYS`` holds
``tenant:digest`` pairs; ``inferq-ops api-key --tenant T`` makes a key and prints its pair. Tenant
names follow the request schema's name pattern, checked when a key is made and when keys are loaded. With no
keys configured the API is open (local use) and says so once at start-up.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from schemas.errors import ConfigurationError
from schemas.messages import NAME_PATTERN
from schemas.settings import Settings


def check_tenant(tenant: str) -> str:
    """``tenant`` if requests may carry it (the request schema's name pattern), else
    :class:`ConfigurationError`: a key for a name the intake refuses would leave every request of
    that tenant unanswerable."""
    if not re.fullmatch(NAME_PATTERN, tenant):
        raise ConfigurationError(
            f"tenant name {tenant[:40]!r} is not allowed: it must match {NAME_PATTERN}",
            hint="use letters, digits and _ . : / - (starting with a letter or digit, at most 128)",
        )
    return tenant


def new_key() -> str:
    return "iq_" + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRing:
    """digest → tenant; empty means authentication is off."""

    tenants: dict[str, str]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        pairs: dict[str, str] = {}
        for entry in settings.api_keys.get_secret_value().split(","):
            if not entry.strip():
                continue
            tenant, _, hexdigest = entry.strip().rpartition(":")
            if not tenant or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
                raise ConfigurationError(
                    "INFERQ_API_KEYS entries must be tenant:sha256hex",
                    hint="make one with `inferq-ops api-key --tenant <name>`",
                )
            pairs[hexdigest] = check_tenant(tenant)
        return cls(pairs)

    @property
    def enabled(self) -> bool:
        return bool(self.tenants)

    def tenant_for(self, key: str | None) -> str | None:
        """The tenant owning ``key``, or None for a missing or unknown key."""
        return self.tenants.get(digest(key)) if key else None
