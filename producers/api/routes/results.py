"""``GET`` and ``DELETE /v1/results/{request_id}``: read (optionally long-polled) and cancel."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from producers.api.context import ApiContext, unknown
from producers.api.errors import documented, short_id
from schemas.errors import NotCancellable
from schemas.messages import REQUEST_ID_PATTERN, InferenceResult, ResultStatus
from schemas.naming import scoped_id

MAX_LONG_POLL_MS = 30_000


async def disconnected(request: Request) -> None:
    """Returns when the client of ``request`` hangs up (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that hands the body again: don't spin


def results_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    caller = ctx.caller

    @router.get(
        "/v1/results/{request_id}",
        response_model=InferenceResult,
        responses=documented(401, 403, 404, 422, 429),
    )
    async def get_result(
        request: Request,
        request_id: str,
        wait_ms: int = Query(0, ge=0, le=MAX_LONG_POLL_MS, description="Hold the answer until terminal"),
        tenant: str | None = Depends(caller),
    ) -> InferenceResult:
        if wait_ms and re.fullmatch(REQUEST_ID_PATTERN, request_id):
            with ctx.hub.slot(tenant):
                result = await ctx.hub.wait(
                    scoped_id(tenant, request_id),
                    wait_ms / 1000.0,
                    lambda: ctx.read(request_id, tenant),
                    gone=lambda: disconnected(request),
                )
        else:
            result = await ctx.read(request_id, tenant)
        if result is None:
            raise unknown(request_id)
        return result

    @router.delete(
        "/v1/results/{request_id}",
        response_model=InferenceResult,
        responses={
            202: {"model": InferenceResult, "description": "A running generation was asked to stop"},
            **documented(401, 403, 404, 409, 422),
        },
    )
    async def cancel(request_id: str, tenant: str | None = Depends(caller)) -> InferenceResult | JSONResponse:
        """Cancel a request that has not started yet (it ends ``cancelled``); a running generation
        is stopped (202: it ends ``cancelled`` with the text so far within one sync interval)."""
        if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
            raise unknown(request_id)
        status, result, stopping = await run_in_threadpool(ctx.store.cancel, request_id, tenant)
        if status is None or result is None:
            raise unknown(request_id)
        if stopping:
            return JSONResponse(status_code=202, content=result.model_dump(mode="json"))
        if status is not ResultStatus.CANCELLED:
            raise NotCancellable(short_id(request_id), status.value)
        return result

    return router
