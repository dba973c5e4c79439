"""The one error hierarchy. Each error says what was wrong and what to do about it.

Errors that reach a client are turned into :class:`schemas.messages.ErrorInfo` through
:meth:`InferqError.info`, so the result store and the dead-letter topic carry the same typed code.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """Stable, machine-readable error codes. Clients branch on these, never on messages."""

    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    VALIDATION_ERROR = "validation_error"
    UNKNOWN_MODEL = "unknown_model"
    TASK_MODEL_MISMATCH = "task_model_mismatch"
    DUPLICATE_REQUEST_ID = "duplicate_request_id"
    DEADLINE_EXPIRED = "deadline_expired"
    CANCELLED = "cancelled"
    NOT_CANCELLABLE = "not_cancellable"
    MODEL_ERROR = "model_error"
    POISON_MESSAGE = "poison_message"
    UNAUTHORIZED = "unauthorized"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    INTERNAL_ERROR = "internal_error"
    MODEL_UNAVAILABLE = "model_unavailable"
    QUOTA_EXCEEDED = "quota_exceeded"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    FORBIDDEN = "forbidden"
    OVERLOADED = "overloaded"
    CALLBACK_REFUSED = "callback_refused"
    REPLY_TOPIC_REFUSED = "reply_topic_refused"


class InferqError(Exception):
    """Base of every error this project raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    hint: str = "this is a bug in inferq; report it with the request id"

    def __init__(self, message: str, *, hint: str | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})"

    def info(self) -> Any:
        """This error as the wire model :class:`schemas.messages.ErrorInfo`."""
        from schemas.messages import ErrorInfo

        return ErrorInfo(code=self.code, message=self.message, hint=self.hint, detail=self.detail)


class InvalidRequest(InferqError):
    """The message can never succeed as sent; it is answered ``failed`` and dead-lettered."""

    code = ErrorCode.VALIDATION_ERROR
    hint = "fix the message to match schemas/jsonschema/InferenceRequest.json and send it again"

    def __init__(self, message: str, *, code: ErrorCode | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        if code is not None:
            self.code = code


class UnknownModel(InvalidRequest):
    code = ErrorCode.UNKNOWN_MODEL
    hint = "use one of the models listed by GET /v1/models, or deploy a worker that serves this one"


class DuplicateRequestId(InvalidRequest):
    """The request id is already taken by a request with different content."""

    code = ErrorCode.DUPLICATE_REQUEST_ID
    hint = "use a fresh request id for a new request (ids must be unique)"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request id {request_id} is already used by a different request")


class CallbackRefused(InvalidRequest):
    """A request's ``callback_url`` is outside the deployment's webhook policy (scheme, host, port,
    address range), or webhooks are off, or its tenant has no signing key (:mod:`schemas.callbacks`)."""

    code = ErrorCode.CALLBACK_REFUSED
    hint = (
        "name an https URL on a host the operator allows (INFERQ_WEBHOOK_ALLOW_HOSTS), or leave "
        "callback_url out and read the result over HTTP or Redis"
    )


class ReplyTopicRefused(InvalidRequest):
    """A request names a ``reply_topic`` its tenant may not publish to (``INFERQ_REPLY_TOPICS``), or
    one of the pipeline's own topics."""

    code = ErrorCode.REPLY_TOPIC_REFUSED
    hint = (
        "name a reply topic your tenant is allowed (the operator lists them in INFERQ_REPLY_TOPICS), "
        "or leave reply_topic out and read the result from the API"
    )


class DeadlineExpired(InferqError):
    code = ErrorCode.DEADLINE_EXPIRED
    hint = "the request's deadline passed before it reached the model; send it again with a later deadline"


class Cancelled(InferqError):
    code = ErrorCode.CANCELLED
    hint = "the request was cancelled before it reached the model; send it again to run it"


class NotCancellable(InferqError):
    """Cancel came too late: the request is running or finished."""

    code = ErrorCode.NOT_CANCELLABLE
    hint = "only a queued request can be cancelled; read its result instead"

    def __init__(self, request_id: str, status: str) -> None:
        super().__init__(f"request {request_id} is {status}; it can no longer be cancelled")


class ModelError(InferqError):
    """The model raised on this input; neighbours in the batch are unaffected."""

    code = ErrorCode.MODEL_ERROR
    hint = "the input made the model fail; check it, or report it with the request id"


class PoisonMessage(InferqError):
    """A request was started ``max_attempts`` times and never finished: its worker died each time."""

    code = ErrorCode.POISON_MESSAGE
    hint = (
        "the request crashed its worker on every attempt; inspect it on the dead-letter topic and send "
        "a corrected request with a new id (INFERQ_MAX_ATTEMPTS sets how many starts are allowed)"
    )


class Unauthorized(InferqError):
    """The API key is missing or unknown."""

    code = ErrorCode.UNAUTHORIZED
    hint = "send your tenant's key as `Authorization: Bearer <key>` (or `X-API-Key: <key>`)"


class PayloadTooLarge(InferqError):
    """An HTTP body over ``INFERQ_API_MAX_BODY_BYTES``."""

    code = ErrorCode.PAYLOAD_TOO_LARGE
    hint = "send fewer or shorter inputs (INFERQ_MAX_INPUTS_PER_REQUEST, INFERQ_MAX_TEXT_CHARS)"


class ModelUnavailable(InferqError):
    """No live worker serves the requested model (it is in the catalogue, but nobody runs it)."""

    code = ErrorCode.MODEL_UNAVAILABLE
    hint = (
        "start a worker that serves this model (INFERQ_WORKER_MODELS), or send the request to a model "
        "that runs"
    )


class QuotaExceeded(InferqError):
    """A tenant is over one of its own limits (requests in flight, stored result bytes)."""

    code = ErrorCode.QUOTA_EXCEEDED
    hint = "wait for your requests in flight to finish, or ask the operator to raise your tenant's limits"


class Overloaded(InferqError):
    """A model already has the most requests in flight the deployment admits
    (``INFERQ_BACKPRESSURE_MAX_INFLIGHT``): the API refuses more rather than store them."""

    code = ErrorCode.OVERLOADED
    hint = "retry in a few seconds with the same request id; the model is working through a backlog"


class NotFound(InferqError):
    """No such request (unknown, expired from the store, or not the caller's)."""

    code = ErrorCode.NOT_FOUND
    hint = "check the request id; results are kept for INFERQ_RESULT_TTL_S"


class MethodNotAllowed(InferqError):
    code = ErrorCode.METHOD_NOT_ALLOWED
    hint = "see /openapi.json for the methods each path takes"


class Forbidden(InferqError):
    """The caller is authenticated but may not do this (another tenant's name, topic or id)."""

    code = ErrorCode.FORBIDDEN
    hint = "act only as the tenant your key (or Kafka principal) belongs to"


class ConfigurationError(InferqError):
    """Settings or the environment are wrong; the process cannot start."""

    hint = "check the INFERQ_* environment variables listed in docs/configuration.md"


class StackError(InferqError):
    """The local stack (``inferq-ops``) could not start, stop or reach a service."""

    hint = "see the service's log under <state_dir>/logs and `inferq-ops status`"
