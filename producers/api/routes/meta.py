"""``GET /v1/models`` and ``GET /healthz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from producers.api.context import ApiContext
from producers.api.errors import ErrorBody, Unavailable, documented
from schemas.catalog import CATALOG
from schemas.messages import Task


class ModelEntry(BaseModel):
    name: str
    task: Task
    description: str


def meta_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    caller = ctx.caller

    @router.get("/v1/models", response_model=list[ModelEntry], responses=documented(401, 403))
    async def models(tenant: str | None = Depends(caller)) -> list[ModelEntry]:
        return [ModelEntry(name=m.name, task=m.task, description=m.description) for m in CATALOG.values()]

    @router.get("/healthz", responses={503: {"model": ErrorBody}})
    async def healthz() -> dict[str, Any]:
        """Redis reachable (answered on the event loop, never behind long polls)."""
        if not await ctx.hub.ping():
            raise Unavailable("the result store (Redis) did not answer")
        return {"ok": True}

    return router
