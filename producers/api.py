"""The HTTP result API (FastAPI). OpenAPI at ``/openapi.json``, docs at ``/docs``.

- ``GET /v1/results/{request_id}`` — status, outputs, timings and model version; 404 if unknown.
  ``?wait_ms=N`` holds the answer until the result is terminal or N ms pass (long poll).
- ``DELETE /v1/results/{request_id}`` — cancel a request that has not started: 200 with the
  ``cancelled`` result; 409 with the current result when it already started or finished.
- ``POST /v1/requests`` — publish a request to Kafka for clients that only speak HTTP; 202.
- ``GET /v1/models`` — the models the pipeline knows.
- ``GET /healthz`` — Redis and Kafka reachable.

Run it with ``inferq-api`` (or ``python -m producers.api``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from pydantic import BaseModel

from ops.logship.ecs import configure_logging, stop_logging
from ops.observe import observe_store
from producers.client import InferqClient
from schemas.catalog import CATALOG
from schemas.errors import DuplicateRequestId, ErrorCode, InvalidRequest, NotCancellable
from schemas.messages import (
    REQUEST_ID_PATTERN,
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    ResultStatus,
    Task,
)
from schemas.settings import Settings, get_settings
from workers.result_store import Admission
from workers.validation import check_request

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
    ) -> InferenceResult:
        result = client.result(request_id) if re.fullmatch(REQUEST_ID_PATTERN, request_id) else None
        if result is None:
            raise HTTPException(status_code=404, detail=f"no result for request {request_id!r}")
        if wait_ms and not result.status.terminal:
            try:
                result = client.wait(request_id, timeout_s=wait_ms / 1000.0)
            except TimeoutError:
                result = client.result(request_id) or result
        return result

    @app.delete(
        "/v1/results/{request_id}",
        response_model=InferenceResult,
        responses={
            404: {"description": "No such request"},
            409: {"model": ErrorBody, "description": "Already started or finished; not cancelled"},
        },
    )
    def cancel(request_id: str) -> InferenceResult | JSONResponse:
        """Cancel a request that has not started yet; it ends ``cancelled``."""
        status, result = (
            client.store.cancel(request_id) if re.fullmatch(REQUEST_ID_PATTERN, request_id) else (None, None)
        )
        if status is None or result is None:
            raise HTTPException(status_code=404, detail=f"no result for request {request_id!r}")
        if status is not ResultStatus.CANCELLED:
            return _error(409, NotCancellable(request_id, status.value).info())
        return result

    @app.post(
        "/v1/requests",
        status_code=202,
        response_model=Accepted,
        responses={409: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    def post_request(body: InferenceRequest) -> Accepted | JSONResponse:
        """Record the request ``queued`` (so its result URL answers at once), then publish it."""
        check_request(body, settings)
        verdict = client.admit(body)
        if verdict is Admission.CONFLICT:
            return _error(409, DuplicateRequestId(body.request_id).info())
        if verdict is not Admission.TERMINAL:
            try:
                client.publish(body).get(PUBLISH_TIMEOUT_S)
            except KafkaError as e:
                if verdict is Admission.NEW:
                    client.store.forget(body.request_id)
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
    def models() -> list[ModelEntry]:
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
