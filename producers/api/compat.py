"""Until the store's per-tenant request ids land (h/store, scoping.md): the calls the API makes with a
tenant, falling back to an ownership check on the unscoped store. Delete this module once the store
takes ``tenant=`` (every function then is the store call itself)."""

from __future__ import annotations

import inspect
from typing import Any

from schemas.errors import InferqError
from schemas.settings import Settings
from workers.result_store import Cancellation, ResultStore

try:
    from schemas.naming import scoped_id  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # pragma: no cover - before the store's branch is merged

    def scoped_id(tenant: str | None, request_id: str) -> str:
        return request_id if tenant is None else f"{tenant}~{request_id}"


def _scoped(method: Any) -> bool:
    return "tenant" in inspect.signature(method).parameters


def get(store: ResultStore, request_id: str, tenant: str | None) -> Any:
    if _scoped(store.get):
        return store.get(request_id, tenant=tenant)  # type: ignore[call-arg,unused-ignore]
    result = store.get(request_id)
    return result if result is not None and result.tenant == tenant else None


def cancel(store: ResultStore, request_id: str, tenant: str | None) -> Cancellation:
    if _scoped(store.cancel):
        return store.cancel(request_id, tenant=tenant)  # type: ignore[call-arg,unused-ignore]
    return store.cancel(request_id) if get(store, request_id, tenant) else Cancellation(None, None)


def forget(store: ResultStore, request_id: str, tenant: str | None) -> None:
    if _scoped(store.forget):
        store.forget(request_id, tenant=tenant)  # type: ignore[call-arg,unused-ignore]
    else:
        store.forget(request_id)


def done_id(store: ResultStore, request_id: str, tenant: str | None) -> str:
    """The id the store publishes on the ``done`` channel for this request."""
    return scoped_id(tenant, request_id) if _scoped(store.get) else request_id


def quota_refusal(verdict: Any, tenant: str | None, settings: Settings) -> InferqError | None:
    """The error for an admission its tenant's limits refused (the store's ``quota_error``), or None."""
    if not getattr(verdict, "over_quota", False):
        return None
    from workers import result_store

    error: InferqError = result_store.quota_error(verdict, tenant, settings)  # type: ignore[attr-defined,unused-ignore]
    return error
