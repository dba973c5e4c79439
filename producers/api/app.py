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

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import uvicorn
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from producers.api.errors import (
    ErrorBody,
    Unavailable,
    documented,
    install,
    short_id,
)
from producers.api.limits import BodyLimit
from producers.api.waits import WaitHub
from producers.auth import KeyRing
from producers.client import InferqClient
from schemas.catalog import CATALOG
from schemas.errors import (
    DuplicateRequestId,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    ModelUnavailable,
    NotCancellable,
    NotFound,
    Overloaded,
    Unauthorized,
)
from schemas.messages import (
    NAME_PATTERN,
    REQUEST_ID_PATTERN,
    InferenceRequest,
    InferenceResult,
    ResultStatus,
    Task,
)
from schemas.naming import scoped_id
from schemas.settings import Settings, get_settings
from schemas.validation import decode_json, validate_request
from workers.store.presence import ServedModels
from workers.store.store import Admission, quota_error
from workers.telemetry.logs import configure_logging, stop_logging
from workers.telemetry.observe import Telemetry

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


def decode_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, decoded as strictly as the intake decodes a Kafka record (one
    decoder, so both paths answer the same codes), or :class:`InvalidRequest`."""
    data = decode_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"the body is JSON {type(data).__name__}, not an object",
            code=ErrorCode.INVALID_JSON,
            hint="send one JSON object (Content-Type: application/json)",
        )
    return data


async def disconnected(request: Request) -> None:
    """Returns when the client of ``request`` hangs up (its body was read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that hands the body again: don't spin


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    client = InferqClient(settings)
    telemetry = Telemetry(settings)
    store = client.store
    store.observer.add(telemetry)  # cancellations are terminal results too: logged and counted
    ring = KeyRing.from_settings(settings)
    hub = WaitHub(settings)
    served = ServedModels(store.client, settings)
    if not ring.enabled:
        log.warning("the result API has no API keys (INFERQ_API_KEYS): every caller sees every result")

    def caller(
        authorization: str | None = Header(None, include_in_schema=False),
        x_api_key: str | None = Header(None, include_in_schema=False),
        tenant: str | None = Query(
            None,
            pattern=NAME_PATTERN,
            description="Without API keys: the tenant whose request ids to use (with keys, the key's)",
        ),
    ) -> str | None:
        """The caller's tenant (the namespace of its request ids), from headers and query only, so
        it is settled before any body is read; 401 for a missing or unknown key."""
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

    def unknown(request_id: str) -> NotFound:
        return NotFound(f"no result for request {short_id(request_id)}")

    async def read(request_id: str, tenant: str | None) -> InferenceResult | None:
        if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
            return None
        result: InferenceResult | None = await run_in_threadpool(store.get, request_id, tenant)
        return result

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        try:
            yield
        finally:
            await hub.close()
            client.close()

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
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)  # outermost: before all else

    @app.get(
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
            with hub.slot(tenant):
                result = await hub.wait(
                    scoped_id(tenant, request_id),
                    wait_ms / 1000.0,
                    lambda: read(request_id, tenant),
                    gone=lambda: disconnected(request),
                )
        else:
            result = await read(request_id, tenant)
        if result is None:
            raise unknown(request_id)
        return result

    @app.delete(
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
        status, result, stopping = await run_in_threadpool(store.cancel, request_id, tenant)
        if status is None or result is None:
            raise unknown(request_id)
        if stopping:
            return JSONResponse(status_code=202, content=result.model_dump(mode="json"))
        if status is not ResultStatus.CANCELLED:
            raise NotCancellable(short_id(request_id), status.value)
        return result

    def admit_and_publish(request: InferenceRequest) -> None:
        """Record the request ``queued`` (so its result URL answers at once), then publish it."""
        if request.model not in served.available():  # what the intake would answer, said at once
            raise ModelUnavailable(f"no live worker serves model {request.model!r}")
        # the intake pauses at this bound; the API must not go on storing requests past it (each
        # holds its body twice in Redis until read: the queued record and the hand-off copy)
        inflight = store.in_flight_by_model([request.model]).get(request.model, 0)
        if inflight >= settings.backpressure_max_inflight:
            raise Overloaded(
                f"model {request.model!r} has {inflight} requests in flight, the most admitted "
                "(INFERQ_BACKPRESSURE_MAX_INFLIGHT)"
            )
        verdict = client.admit(request)
        if verdict is Admission.CONFLICT:
            raise DuplicateRequestId(short_id(request.request_id))
        if verdict.over_quota:  # 429: the tenant's own limit (requests in flight, stored bytes)
            raise quota_error(verdict, request.tenant, settings)
        if verdict is Admission.TERMINAL:
            return
        try:
            client.publish(request).get(PUBLISH_TIMEOUT_S)
        except KafkaError as e:
            if verdict is Admission.NEW:
                store.forget(request.request_id, request.tenant)
            raise Unavailable(f"Kafka did not take the request ({type(e).__name__})") from e
        if verdict is Admission.NEW:
            # counted here: the intake then finds the request already admitted (PENDING) and
            # does not count it again, so each admission path counts a request exactly once
            telemetry.admitted(request.model)

    @app.post(
        "/v1/requests",
        status_code=202,
        response_model=Accepted,
        responses=documented(400, 401, 403, 409, 413, 422, 429, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}
                },
            }
        },
    )
    async def post_request(request: Request, tenant: str | None = Depends(caller)) -> Accepted:
        """Validate the body as the intake validates a Kafka record, record it ``queued``, publish it.
        The caller is settled (headers only) before the body is read."""
        data = decode_body(await request.body())
        if tenant is not None:
            if data.get("tenant") not in (None, tenant):
                raise Forbidden(f"this caller is tenant {tenant!r}; a request may only be its own")
            data = {**data, "tenant": tenant}
        body = validate_request(data, settings)  # the intake's own checks: one contract
        if not client.can_sign(body.tenant):  # the intake would refuse it: never admit it queued
            raise Forbidden(
                "requests of this tenant cannot be signed for Kafka (INFERQ_KAFKA_TENANT_AUTH=signed)",
                hint="the operator must give this tenant a key in INFERQ_KAFKA_TENANT_KEYS",
            )
        await run_in_threadpool(admit_and_publish, body)
        url = f"/v1/results/{body.request_id}"
        if not ring.enabled and body.tenant is not None:
            url += f"?tenant={quote(body.tenant, safe='')}"
        return Accepted(request_id=body.request_id, result_url=url)

    @app.get("/v1/models", response_model=list[ModelEntry], responses=documented(401, 403))
    async def models(tenant: str | None = Depends(caller)) -> list[ModelEntry]:
        return [ModelEntry(name=m.name, task=m.task, description=m.description) for m in CATALOG.values()]

    @app.get("/healthz", responses={503: {"model": ErrorBody}})
    async def healthz() -> dict[str, Any]:
        if not await hub.ping():
            raise Unavailable("the result store (Redis) did not answer")
        return {"ok": True}

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the request body schema (the body is read by hand, see above)."""
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

    app.openapi = openapi  # type: ignore[method-assign]
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
