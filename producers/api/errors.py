"""Every error answer of the API: one map from error class to HTTP status, one body shape.

Every refusal is an :class:`~schemas.errors.InferqError` answered as ``{"error": ErrorInfo}`` with
the status :data:`STATUS` gives its class (the nearest listed base class wins). Starlette's own
answers (unknown path 404, wrong method 405), FastAPI's ``HTTPException`` and parameter validation
(422) are turned into the same shape here, so a client parses one thing whatever went wrong.
Request ids are echoed only as a short prefix (:func:`short_id`): an error answer never hands a
full id to whoever holds the response (logs, proxies, a browser history).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import (
    DuplicateRequestId,
    ErrorCode,
    Forbidden,
    InferqError,
    InvalidRequest,
    MethodNotAllowed,
    ModelUnavailable,
    NotCancellable,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
)
from schemas.explain import explain
from schemas.messages import ErrorInfo

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500  # a message quoting a client's value stays bounded


class BadRequest(InvalidRequest):
    """A request HTTP itself cannot make sense of (a malformed header or query string)."""

    hint = "see /openapi.json for what each call takes"


class Unavailable(InferqError):
    """A backing service (Kafka, Redis) did not answer in time; nothing was lost or half-done."""

    hint = "retry in a few seconds (with the same request id for POST /v1/requests)"


class InternalError(InferqError):
    """An exception the API did not expect; logged with its traceback."""


# The one place an error becomes an HTTP status.
STATUS: dict[type[InferqError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    DuplicateRequestId: 409,
    NotCancellable: 409,
    PayloadTooLarge: 413,
    InvalidRequest: 422,
    QuotaExceeded: 429,
    InternalError: 500,
    Unavailable: 503,
    ModelUnavailable: 503,
    Overloaded: 503,
}

# Starlette / FastAPI refusals carry only a status: the error class that status stands for.
_BY_STATUS: dict[int, type[InferqError]] = {}
for _cls, _status in STATUS.items():
    _BY_STATUS.setdefault(_status, _cls)


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorInfo


def short_id(request_id: str) -> str:
    """The first characters of an id, enough to tell one's own requests apart in an answer."""
    return request_id if len(request_id) <= 6 else request_id[:6] + "…"


def status_of(exc: InferqError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(exc: InferqError) -> JSONResponse:
    """``{"error": ErrorInfo}`` with the status :data:`STATUS` gives, and the headers it implies."""
    info: ErrorInfo = exc.info()
    if len(info.message) > MAX_MESSAGE_CHARS:
        info = info.model_copy(update={"message": info.message[:MAX_MESSAGE_CHARS] + "…"})
    status = status_of(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="inferq"'
    elif status in (429, 503):
        headers["Retry-After"] = "1"
    elif status == 413:
        headers["Connection"] = "close"  # the rest of the body is not read
    return JSONResponse(
        status_code=status, content=ErrorBody(error=info).model_dump(mode="json"), headers=headers
    )


def from_status(status: int, message: str) -> InferqError:
    """The typed error for a bare HTTP status (Starlette's 404/405, a FastAPI ``HTTPException``)."""
    cls = _BY_STATUS.get(status)
    if cls is None or cls in (DuplicateRequestId, NotCancellable):
        error = InferqError(message)
        error.code = ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.VALIDATION_ERROR
        return error
    return cls(message)


# Responses every route may give, for its OpenAPI entry (clients and the fuzz test read them).
def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": (_BY_STATUS[s].__doc__ or "").strip()} for s in statuses}


def install(app: FastAPI) -> None:
    """Route every kind of failure through :func:`error_response`."""

    @app.exception_handler(InferqError)
    async def _typed(request: Request, exc: InferqError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = explain(exc.errors())
        return error_response(
            InvalidRequest(message, hint="see /openapi.json for what each call takes", detail=detail)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "refused"
        if exc.status_code == 404:
            message = "no such path"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed here"
        response = error_response(from_status(exc.status_code, message))
        response.status_code = exc.status_code
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        return error_response(Unavailable("the result store (Redis) did not answer"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return error_response(InternalError(f"unexpected {type(exc).__name__}"))
