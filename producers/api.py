"""The HTTP result API (FastAPI). OpenAPI at ``/openapi.json``, docs at ``/docs``.

- ``GET /v1/results/{request_id}`` — status, outputs, timings and model version; 404 if unknown.
  ``?wait_ms=N`` holds the answer until the result is terminal or N ms pass (long poll).
- ``DELETE /v1/results/{request_id}`` — cancel a request that has not started: 200 with the
  ``cancelled`` result; 202 for a running generation, which stops and keeps its text so far;
  409 with the current result when it already started (not a generation) or finished.
- ``POST /v1/requests`` — publish a request to Kafka for clients that only speak HTTP; 202.
- ``GET /v1/models`` — the models the pipeline knows.
- ``GET /healthz`` — Redis and Kafka reachable.

With ``INFERQ_API_KEYS`` set, every ``/v1`` call needs a tenant's key (``Authorization: Bearer``
or ``X-API-Key``); a tenant sees and cancels only its own requests — another tenant's id answers 404,
exactly like an unknown one — and requests it posts carry its tenant. Bodies over
``INFERQ_API_MAX_BODY_BYTES`` get 413; CORS is off unless ``INFERQ_API_CORS_ORIGINS`` names origins.

Run it with ``inferq-api`` (or ``python -m producers.api``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from pydantic import BaseModel

from ops.logship.ecs import configure_logging, stop_logging
from ops.observe import observe_store
from producers.auth import KeyRing
from producers.client import InferqClient
from schemas.catalog import CATALOG
from schemas.errors import (
    DuplicateRequestId,
    ErrorCode,
    InferqError,
    InvalidRequest,
    NotCancellable,
    PayloadTooLarge,
    Unauthorized,
)
from schemas.messages import (
    REQUEST_ID_PATTERN,
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    ResultStatus,
    Task,
)
from schemas.settings import Settings, get_settings
from workers.result_store import Admission, quota_error
from workers.validation import check_request

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
MAX_LONG_POLL_MS = 30_000


class Accepted(BaseModel):
    request_id: str
    status: str = "accepted"
    result_url: str


class ModelEntry(BaseModel):
    name: str
    task: Task
    description: str


class ErrorBody(BaseModel):
    error: ErrorInfo


def _error(status: int, info: ErrorInfo) -> JSONResponse:
    """The body of every error answer: ``{"error": ErrorInfo}``."""
    return JSONResponse(status_code=status, content=ErrorBody(error=info).model_dump(mode="json"))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    client = InferqClient(settings)
    observe_store(client.store)  # cancellations are terminal results too: logged and counted
    ring = KeyRing.from_settings(settings)
    if not ring.enabled:
        log.warning("the result API has no API keys (INFERQ_API_KEYS): every caller sees every result")

    def caller(
        authorization: str | None = Header(None, include_in_schema=False),
        x_api_key: str | None = Header(None, include_in_schema=False),
    ) -> str | None:
        """The caller's tenant; None when authentication is off; 401 for a missing or unknown key."""
        if not ring.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        tenant = ring.tenant_for(x_api_key or bearer)
        if tenant is None:
            raise Unauthorized("missing or unknown API key")
        return tenant

    def owned(request_id: str, tenant: str | None) -> InferenceResult | None:
        """The result, unless the id is malformed, unknown, or another tenant's (all look alike)."""
        result = client.result(request_id, tenant) if re.fullmatch(REQUEST_ID_PATTERN, request_id) else None
        if result is None or (tenant is not None and result.tenant != tenant):
            return None
        return result

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        client.close()

    app = FastAPI(
        title="inferq result API",
        version="1",
        description="Poll inference results; publish requests over HTTP.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        info = ErrorInfo(
            code=ErrorCode.VALIDATION_ERROR,
            message=errors[0]["msg"] if errors else "invalid",
            hint="see /openapi.json for the request schema",
            detail=errors,
        )
        return _error(422, info)

    if settings.api_cors_origins.strip():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.api_cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > settings.api_max_body_bytes:
            limit = settings.api_max_body_bytes
            return _error(413, PayloadTooLarge(f"body of {size} bytes is over the limit of {limit}").info())
        return await call_next(request)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: InferqError) -> JSONResponse:
        response = _error(401, exc.info())
        response.headers["WWW-Authenticate"] = 'Bearer realm="inferq"'
        return response

    @app.exception_handler(InvalidRequest)
    async def _rejected(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(422, exc.info())

    @app.get(
        "/v1/results/{request_id}",
        response_model=InferenceResult,
        responses={404: {"description": "No such request (or it expired from the store)"}},
    )
    def get_result(
        request_id: str,
        wait_ms: int = Query(0, ge=0, le=MAX_LONG_POLL_MS, description="Hold the answer until terminal"),
        tenant: str | None = Depends(caller),
    ) -> InferenceResult:
        result = owned(request_id, tenant)
        if result is None:
            raise HTTPException(status_code=404, detail=f"no result for request {request_id!r}")
        if wait_ms and not result.status.terminal:
            try:
                result = client.wait(request_id, timeout_s=wait_ms / 1000.0, tenant=tenant)
            except TimeoutError:
                result = client.result(request_id, tenant) or result
        return result

    @app.delete(
        "/v1/results/{request_id}",
        response_model=InferenceResult,
        responses={
            202: {"model": InferenceResult, "description": "A running generation was asked to stop"},
            404: {"description": "No such request"},
            409: {"model": ErrorBody, "description": "Already started or finished; not cancelled"},
        },
    )
    def cancel(request_id: str, tenant: str | None = Depends(caller)) -> InferenceResult | JSONResponse:
        """Cancel a request that has not started yet (it ends ``cancelled``); a running generation
        is stopped (202: it ends ``cancelled`` with the text so far within one sync interval)."""
        status, result, stopping = (
            client.store.cancel(request_id, client.tenant_of(request_id, tenant))
            if owned(request_id, tenant)
            else (None, None, False)
        )
        if status is None or result is None:
            raise HTTPException(status_code=404, detail=f"no result for request {request_id!r}")
        if stopping:
            return JSONResponse(status_code=202, content=result.model_dump(mode="json"))
        if status is not ResultStatus.CANCELLED:
            return _error(409, NotCancellable(request_id, status.value).info())
        return result

    @app.post(
        "/v1/requests",
        status_code=202,
        response_model=Accepted,
        responses={409: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    def post_request(body: InferenceRequest, tenant: str | None = Depends(caller)) -> Accepted | JSONResponse:
        """Record the request ``queued`` (so its result URL answers at once), then publish it."""
        if tenant is not None:
            if body.tenant not in (None, tenant):
                return _error(403, Unauthorized(f"this key belongs to tenant {tenant!r}").info())
            body = body.model_copy(update={"tenant": tenant})
        check_request(body, settings)
        verdict = client.admit(body)
        if verdict is Admission.CONFLICT:
            return _error(409, DuplicateRequestId(body.request_id).info())
        if verdict.over_quota:
            return _error(429, quota_error(verdict, body.tenant, settings).info())
        if verdict is not Admission.TERMINAL:
            try:
                client.publish(body).get(PUBLISH_TIMEOUT_S)
            except KafkaError as e:
                if verdict is Admission.NEW:
                    client.store.forget(body.request_id, body.tenant)
                return _error(
                    503,
                    ErrorInfo(
                        code=ErrorCode.INTERNAL_ERROR,
                        message=f"Kafka did not take the request: {e}",
                        hint="retry with the same request id",
                    ),
                )
        return Accepted(request_id=body.request_id, result_url=f"/v1/results/{body.request_id}")

    @app.get("/v1/models", response_model=list[ModelEntry])
    def models(tenant: str | None = Depends(caller)) -> list[ModelEntry]:
        return [ModelEntry(name=m.name, task=m.task, description=m.description) for m in CATALOG.values()]

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        client.store.client.ping()
        return {"ok": True}

    return app


def main() -> None:
    s = get_settings()
    configure_logging(s, "api")
    try:
        # log_config=None: uvicorn's records go through the ECS handlers configured above
        uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_config=None)
    finally:
        stop_logging()


if __name__ == "__main__":
    main()
