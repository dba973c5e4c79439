"""The HTTP result API (FastAPI). OpenAPI at ``/openapi.json``, docs at ``/docs``.

- ``GET /v1/results/{request_id}`` — status, outputs, timings and model version; 404 if unknown.
  ``?wait_ms=N`` holds the answer until the result is terminal or N ms pass (long poll; it holds no
  thread, and each tenant may hold ``INFERQ_API_MAX_WAITS_PER_TENANT`` at once).
- ``DELETE /v1/results/{request_id}`` — cancel a request that has not started: 200 with the
  ``cancelled`` result; 202 for a running generation, which stops and keeps its text so far;
  409 when it already started (not a generation) or finished.
- ``POST /v1/requests`` — publish a request to Kafka for clients that only speak HTTP; 202. The body
  is validated exactly as the intake validates a Kafka record (``schema_version`` is required).
- ``GET /v1/models`` — the models the pipeline knows.
- ``GET /healthz`` — Redis reachable (answered on the event loop, never behind long polls).

Request ids are per tenant: with ``INFERQ_API_KEYS`` set, every ``/v1`` call needs a tenant's key
(``Authorization: Bearer`` or ``X-API-Key``) and looks ids up in that tenant's namespace only, so
another tenant's id is simply unknown (the same answer, in the same time, as a fresh one) and a POST
with it is the caller's own new request. Without keys an optional ``?tenant=`` picks the namespace.
Bodies over ``INFERQ_API_MAX_BODY_BYTES`` (counted as received) get 413 before anything else; CORS
is off unless ``INFERQ_API_CORS_ORIGINS`` names origins. Every error is ``{"error": ErrorInfo}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from producers.api.context import ApiContext
from producers.api.errors import install
from producers.api.limits import BodyLimit
from producers.api.routes.meta import meta_router
from producers.api.routes.requests import requests_router
from producers.api.routes.results import results_router
from schemas.messages import InferenceRequest
from schemas.settings import Settings, get_settings
from workers.telemetry.logs import configure_logging, stop_logging
from workers.telemetry.observe import Telemetry

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ctx = ApiContext.build(settings, Telemetry(settings))
    if not ctx.ring.enabled:
        log.warning("the result API has no API keys (INFERQ_API_KEYS): every caller sees every result")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.hub.start()
        try:
            yield
        finally:
            await ctx.hub.close()
            ctx.client.close()

    app = FastAPI(
        title="inferq result API",
        version="1",
        description="Poll inference results; publish requests over HTTP.",
        lifespan=lifespan,
    )
    install(app)
    if settings.api_cors_origins.strip():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.api_cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "traceparent", "tracestate"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)  # outermost: before all else
    for router in (results_router(ctx), requests_router(ctx), meta_router(ctx)):
        app.include_router(router)
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request body schema (``POST /v1/requests`` reads its body by
    hand, to decode it as strictly as the intake does)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, sub in body.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components["InferenceRequest"] = body
        app.openapi_schema = schema
    return app.openapi_schema


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
