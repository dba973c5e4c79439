"""``POST /v1/requests``: publish a request over HTTP, validated exactly as the intake validates a
Kafka record, recorded ``queued`` first so its result URL answers at once."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from kafka.errors import KafkaError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from producers.api.context import ApiContext
from producers.api.errors import Unavailable, documented, short_id
from schemas import tracing
from schemas.errors import (
    DuplicateRequestId,
    ErrorCode,
    Forbidden,
    InvalidRequest,
    ModelUnavailable,
    Overloaded,
)
from schemas.messages import InferenceRequest, now_ms
from schemas.observer import API_SPAN, RequestSpan
from schemas.tracing import TraceContext
from schemas.validation import decode_json, validate_request
from workers.store.store import Admission, quota_error

PUBLISH_TIMEOUT_S = 10.0


class Accepted(BaseModel):
    request_id: str
    status: str = "accepted"
    result_url: str


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


def admit_and_publish(ctx: ApiContext, request: InferenceRequest, trace: TraceContext | None = None) -> None:
    """Record the request ``queued`` (so its result URL answers at once), then publish it;
    ``trace``: the API's span for it (the record's ``traceparent`` continues it)."""
    s, store, start_ms = ctx.settings, ctx.store, now_ms()
    available = ctx.served.available()
    if request.model_version is not None:  # pinned: that version must be served (schemas.versions)
        pinned = f"{request.model}@{request.model_version}"
        if not ctx.served.is_available(pinned):
            raise ModelUnavailable(
                f"no live worker serves version {request.model_version!r} of model {request.model!r}"
            )
    elif request.model not in available and not any(m.startswith(f"{request.model}@") for m in available):
        # what the intake would answer, said at once (it routes unpinned ones by the rollout)
        raise ModelUnavailable(f"no live worker serves model {request.model!r}")
    # the intake pauses at this bound; the API must not go on storing requests past it (each
    # holds its body twice in Redis until read: the queued record and the hand-off copy)
    inflight = store.in_flight_by_model([request.model]).get(request.model, 0)
    if inflight >= s.backpressure_max_inflight:
        raise Overloaded(
            f"model {request.model!r} has {inflight} requests in flight, the most admitted "
            "(INFERQ_BACKPRESSURE_MAX_INFLIGHT)"
        )
    verdict = ctx.client.admit(request, trace)
    if verdict is Admission.CONFLICT:
        raise DuplicateRequestId(short_id(request.request_id))
    if verdict.over_quota:  # 429: the tenant's own limit (requests in flight, stored bytes)
        raise quota_error(verdict, request.tenant, s)
    if verdict is Admission.TERMINAL:
        return
    try:
        ctx.client.publish(request, traceparent=trace).get(PUBLISH_TIMEOUT_S)
    except KafkaError as e:
        if verdict is Admission.NEW:
            store.forget(request.request_id, request.tenant)
        raise Unavailable(f"Kafka did not take the request ({type(e).__name__})") from e
    if verdict is Admission.NEW:
        # counted here: the intake then finds the request already admitted (PENDING) and
        # does not count it again, so each admission path counts a request exactly once
        ctx.observer.admitted(request.model)
    if trace is not None and ctx.observer.tracing:
        span = RequestSpan(API_SPAN, trace, start_ms, now_ms(), request.request_id, request.model)
        ctx.observer.request_spans([span])


def _trace(ctx: ApiContext, request: Request) -> TraceContext:
    """The API's span for a request: a child of the caller's ``traceparent``, or a new trace (an
    invalid or repeated header is ignored and counted, never refused)."""
    incoming = tracing.from_http_headers(
        request.headers.getlist(tracing.TRACEPARENT), request.headers.getlist(tracing.TRACESTATE)
    )
    if incoming.ignored:
        ctx.observer.trace_ignored("http")
    return tracing.received(incoming.parent)


def requests_router(ctx: ApiContext) -> APIRouter:
    router = APIRouter()
    caller = ctx.caller

    @router.post(
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
        body = validate_request(data, ctx.settings)  # the intake's own checks: one contract
        if not ctx.client.can_sign(body.tenant):  # the intake would refuse it: never admit it queued
            raise Forbidden(
                "requests of this tenant cannot be signed for Kafka (INFERQ_KAFKA_TENANT_AUTH=signed)",
                hint="the operator must give this tenant a key in INFERQ_KAFKA_TENANT_KEYS",
            )
        await run_in_threadpool(admit_and_publish, ctx, body, _trace(ctx, request))
        url = f"/v1/results/{body.request_id}"
        if not ctx.ring.enabled and body.tenant is not None:
            url += f"?tenant={quote(body.tenant, safe='')}"
        return Accepted(request_id=body.request_id, result_url=url)

    return router
