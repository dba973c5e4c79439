"""The versioned message contract shared by producers, workers and ops.

Everything that crosses a process boundary is defined here: request, result, error and
dead-letter models (:mod:`schemas.messages`), the one settings object (:mod:`schemas.settings`),
Redis keys and topic names (:mod:`schemas.naming`) and the error hierarchy (:mod:`schemas.errors`).
"""

from schemas.messages import (
    SCHEMA_VERSION,
    ClassifyOutput,
    DeadLetter,
    EmbeddingOutput,
    ErrorCode,
    ErrorInfo,
    FinishReason,
    GenerationOutput,
    GenerationParams,
    InferenceRequest,
    InferenceResult,
    Priority,
    ResultStatus,
    StreamChunk,
    Task,
    Timings,
    new_request_id,
)
from schemas.settings import Settings, get_settings

__all__ = [
    "SCHEMA_VERSION",
    "ClassifyOutput",
    "DeadLetter",
    "EmbeddingOutput",
    "ErrorCode",
    "ErrorInfo",
    "FinishReason",
    "GenerationOutput",
    "GenerationParams",
    "InferenceRequest",
    "InferenceResult",
    "Priority",
    "ResultStatus",
    "Settings",
    "StreamChunk",
    "Task",
    "Timings",
    "get_settings",
    "new_request_id",
]
