"""What every route of the API shares: one per app, built in :func:`producers.api.app.create_app`."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Header, Query
from starlette.concurrency import run_in_threadpool

from producers.api.errors import short_id
from producers.api.waits import WaitHub
from producers.auth import KeyRing
from producers.client import InferqClient
from schemas.errors import Forbidden, NotFound, Unauthorized
from schemas.messages import NAME_PATTERN, REQUEST_ID_PATTERN, InferenceResult
from schemas.observer import Observer
from schemas.settings import Settings
from workers.store.presence import ServedModels
from workers.store.store import ResultStore


@dataclass
class ApiContext:
    """The app's settings, its Kafka/Redis client, keys, long-poll hub and telemetry."""

    settings: Settings
    client: InferqClient
    ring: KeyRing
    hub: WaitHub
    served: ServedModels
    observer: Observer

    @classmethod
    def build(cls, settings: Settings, observer: Observer) -> ApiContext:
        client = InferqClient(settings, observer=observer)  # observer: its publish spans, if exported
        client.store.observer.add(observer)  # cancellations are terminal results too: logged and counted
        served = ServedModels(client.store.client, settings)
        return cls(settings, client, KeyRing.from_settings(settings), WaitHub(settings), served, observer)

    @property
    def store(self) -> ResultStore:
        return self.client.store

    async def read(self, request_id: str, tenant: str | None) -> InferenceResult | None:
        """The stored result of ``request_id`` in ``tenant``'s namespace; None for an id that
        cannot exist (never a round trip to Redis for it)."""
        if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
            return None
        result: InferenceResult | None = await run_in_threadpool(self.store.get, request_id, tenant)
        return result

    @functools.cached_property
    def caller(self) -> Callable[..., str | None]:
        """The one dependency every route uses to settle the caller's tenant (:func:`caller_of`)."""
        return caller_of(self.ring)


def caller_of(ring: KeyRing) -> Callable[..., str | None]:
    """A FastAPI dependency: the caller's tenant (the namespace of its request ids), from headers
    and query only, so it is settled before any body is read; 401 for a missing or unknown key."""

    def caller(
        authorization: str | None = Header(None, include_in_schema=False),
        x_api_key: str | None = Header(None, include_in_schema=False),
        tenant: str | None = Query(
            None,
            pattern=NAME_PATTERN,
            description="Without API keys: the tenant whose request ids to use (with keys, the key's)",
        ),
    ) -> str | None:
        if not ring.enabled:
            return tenant
        scheme, _, token = (authorization or "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        owner = ring.tenant_for(x_api_key or bearer)
        if owner is None:
            raise Unauthorized("missing or unknown API key")
        if tenant not in (None, owner):
            raise Forbidden("this key belongs to another tenant")
        return owner

    return caller


def unknown(request_id: str) -> NotFound:
    return NotFound(f"no result for request {short_id(request_id)}")
