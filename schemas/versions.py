"""Model versions: which version of a model a request goes to, and the rollout state that decides it.

A *version* is the part of a result's ``model_version`` after ``<model>@`` (a digest of the
weights, e.g. ``all-MiniLM-L6-v2@53aa51172d14`` → ``53aa51172d14``). A worker serves the versions
it loads (``INFERQ_WORKER_MODELS``: ``<model>`` is the model's default build, ``<model>@<variant>``
another build, e.g. ``all-MiniLM-L6-v2@int8``); each (model, version) has its own Celery queue
(:func:`schemas.naming.version_queue`).

A request that pins a version (``model_version``) goes to it. An unpinned one goes where the
model's :class:`Rollout` (kept in Redis, changed by ``inferq-ops rollout``) says: its ``current``
version (none set: the model's default queue, read by the workers that load the default build), or,
for ``canary_share_bp`` in 10 000 of request ids, its ``canary``. The split is a hash of the scoped
request id (:func:`bucket`), so the same id always lands on the same side: a retry, or a record
read twice, goes to the version it went to first while the rollout is unchanged. The hash is keyed
with the rollout's ``salt`` (random, made when a canary starts, kept in Redis): without it a tenant
could pick request ids that land on the canary (or avoid it) and sway how it is judged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import VERSION_PATTERN

BUCKETS = 10_000  # canary shares are in basis points of these
_VERSION = re.compile(VERSION_PATTERN)


def is_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def version_of(model_version: str | None) -> str | None:
    """The version part of a result's ``model_version`` (``<model>@<version>``)."""
    if not model_version or "@" not in model_version:
        return None
    return model_version.partition("@")[2]


def bucket(scoped_id: str, salt: str = "") -> int:
    """A request id's place in ``[0, BUCKETS)``: the first 8 bytes of the sha256 of ``salt`` and
    the id, mod BUCKETS (the same on every intake and every run, unlike Python's salted ``hash``)."""
    keyed = f"{salt}\0{scoped_id}" if salt else scoped_id
    return int.from_bytes(hashlib.sha256(keyed.encode()).digest()[:8], "big") % BUCKETS


class Rollout(BaseModel):
    """One model's routing of unpinned requests (the Redis hash :func:`schemas.naming.rollout_key`).

    ``current`` None: the model's default queue. ``previous``: what ``current`` was before the last
    promotion, where a rollback with no canary goes back to (None: the default queue again)."""

    model_config = ConfigDict(frozen=True)

    current: str | None = Field(None, pattern=VERSION_PATTERN)
    canary: str | None = Field(None, pattern=VERSION_PATTERN)
    canary_share_bp: int = Field(0, ge=0, le=BUCKETS)
    previous: str | None = Field(None, pattern=VERSION_PATTERN)
    salt: str = Field("", pattern=r"^[0-9a-f]{0,32}$")  # keys the split's hash (never shown to tenants)

    def bucket(self, scoped_id: str) -> int:
        return bucket(scoped_id, self.salt)

    def choose(self, scoped_id: str) -> str | None:
        """The version an unpinned request with this scoped id goes to (None: the default queue)."""
        if self.canary is not None and self.bucket(scoped_id) < self.canary_share_bp:
            return self.canary
        return self.current

    def fields(self) -> dict[str, str]:
        """The Redis hash's fields ("" = none)."""
        return {
            "current": self.current or "",
            "canary": self.canary or "",
            "canary_share_bp": str(self.canary_share_bp),
            "previous": self.previous or "",
            "salt": self.salt,
        }

    @classmethod
    def from_fields(cls, raw: dict[str, str]) -> Rollout:
        """Read the hash back (a field that does not validate raises ``ValidationError``)."""
        return cls(
            current=raw.get("current") or None,
            canary=raw.get("canary") or None,
            canary_share_bp=int(raw.get("canary_share_bp") or 0),
            previous=raw.get("previous") or None,
            salt=raw.get("salt") or "",
        )


@dataclass(frozen=True)
class Route:
    """Where one request goes: its model and version (None: the model's default queue)."""

    model: str
    version: str | None = None

    @property
    def served_as(self) -> str:
        """The name workers advertise for it (:mod:`workers.store.presence`): ``<model>`` for the
        default queue, ``<model>@<version>`` for a version."""
        return self.model if self.version is None else f"{self.model}@{self.version}"
