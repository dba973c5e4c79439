"""Wire models, version 1: what producers publish, what workers write, what clients read.

Any Kafka client can publish an :class:`InferenceRequest` as UTF-8 JSON to ``<prefix>.requests``
(key = request id). Results are :class:`InferenceResult` JSON in Redis and over HTTP. Invalid
messages produce a :class:`DeadLetter` on ``<prefix>.deadletter``. The JSON Schema files in
``schemas/jsonschema`` are exported from these models (``python -m schemas.export``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import struct
import time
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.errors import ErrorCode

SCHEMA_VERSION = 1
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"

RequestId = Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
TOPIC_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,248}$"  # Kafka's topic names (not starting with a dot)
TopicName = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN)]
# a model version: the part of a result's ``model_version`` after ``<model>@`` (a weights digest)
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
Version = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
MAX_CALLBACK_URL_CHARS = 2048
TRACE_ID_PATTERN = r"^[0-9a-f]{32}$"  # W3C trace context (schemas.tracing)


def new_request_id() -> str:
    """A fresh request id: 144 random bits, URL-safe, 24 characters; not guessable."""
    return secrets.token_urlsafe(18)


def now_ms() -> float:
    """Wall-clock time in epoch milliseconds, the unit of every timestamp on the wire."""
    return time.time() * 1000.0


class Task(str, Enum):
    EMBED = "embed"
    CLASSIFY = "classify"
    GENERATE = "generate"


class EmbeddingEncoding(str, Enum):
    """How an embedding is written in its result. ``float``: a JSON array of numbers (the default);
    ``base64``: the vector's little-endian float32 bytes in base64 (about 4× smaller, no float
    formatting on either side); ``base64-f16``: float16 bytes (half that again, ~3 significant
    digits: enough for cosine similarity, not for exact comparison)."""

    FLOAT = "float"
    BASE64 = "base64"
    BASE64_F16 = "base64-f16"


class Priority(str, Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ResultStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (ResultStatus.QUEUED, ResultStatus.RUNNING)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


StopSequence = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class GenerationParams(_Model):
    """``generate``: how to continue each prompt. Defaults give greedy decoding of 64 tokens."""

    max_new_tokens: int = Field(
        64, ge=1, le=4_096, description="Most tokens generated per prompt (the operator's cap may be lower)"
    )
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 = greedy (argmax); higher = more random")
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: sample from the smallest set of tokens with this mass",
    )
    stop: list[StopSequence] = Field(
        default_factory=list,
        max_length=8,
        description="Generation ends before the first of these strings; it is not part of the text",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="Seed of the sampler: the same seed and prompt give the same text",
    )
    stream_to_kafka: bool = Field(
        False, description="Also publish each chunk of text to <prefix>.stream as it is produced"
    )


class Role(str, Enum):
    """Who speaks a chat message; the model's chat template renders each role its own way."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


MAX_CHAT_MESSAGES = 64
MAX_CHAT_CHARS = 100_000  # all messages' content together; the operator's limit may be lower


class ChatMessage(_Model):
    """One turn of a conversation (``generate`` with ``messages``)."""

    role: Role = Field(description="`system`, `user` or `assistant`")
    content: Annotated[str, StringConstraints(max_length=MAX_CHAT_CHARS)] = Field(
        description="The turn's text; it may not contain the model's own control tokens"
    )


def _schema_version_required(schema: dict[str, Any]) -> None:
    """The wire contract: ``schema_version`` is required on the wire (the intake and the HTTP API
    refuse a request without it), while Python constructors keep the default of the current one."""
    required = schema.setdefault("required", [])
    if "schema_version" not in required:
        required.insert(0, "schema_version")


class InferenceRequest(_Model):
    """One inference request: one text or a list of texts for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_schema_version_required)

    schema_version: Literal[1] = Field(
        1, description="Version of this contract; required on the wire (Python fills it in)"
    )
    request_id: RequestId = Field(
        default_factory=new_request_id,
        description="Client-supplied (16-128 URL-safe chars, unguessable) or generated",
    )
    task: Task
    model: Name = Field(
        description="Registered model name, e.g. all-MiniLM-L6-v2 or minilm-intent (`<name>@<version>` "
        "pins a version, as `model_version` does)"
    )
    model_version: Version | None = Field(
        None,
        description="Pin a version of the model: the part after `@` of a result's `model_version` (or "
        "that whole string); absent = the model's current version (the operator's rollout)",
    )
    inputs: Text | list[Text] | None = Field(
        None, description="One text, or a non-empty list of texts (exactly one of `inputs` and `messages`)"
    )
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CHAT_MESSAGES,
        description=(
            "generate: a conversation, rendered with the model's chat template and answered as the "
            f"assistant's next turn (at most {MAX_CHAT_MESSAGES} messages, {MAX_CHAT_CHARS} characters "
            "in all; exactly one of `inputs` and `messages`)"
        ),
    )
    tenant: Name | None = Field(None, description="Tenant the request belongs to")
    priority: Priority = Priority.NORMAL
    deadline: AwareDatetime | None = Field(None, description="Past this instant the request ends `expired`")
    top_k: int = Field(5, ge=1, le=200, description="classify: how many labels to return, best first")
    generation: GenerationParams | None = Field(
        None, description="generate: decoding parameters (defaults when absent); refused for other tasks"
    )
    encoding: EmbeddingEncoding | None = Field(
        None,
        description="embed: how each embedding is written in the result (absent = float, a JSON array); "
        "refused for other tasks",
    )
    reply_topic: TopicName | None = Field(
        None,
        description="Also publish the terminal result to this Kafka topic (key = request id); "
        "the topics a tenant may name are configured (INFERQ_REPLY_TOPICS)",
    )
    callback_url: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_CALLBACK_URL_CHARS)] | None
    ) = Field(
        None,
        description="Also POST the terminal result to this URL (https; signed with the tenant's "
        "webhook key); hosts outside the configured allow-list are refused",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_pinned_version(cls, data: Any) -> Any:
        """``model: "<name>@<version>"`` and ``model_version: "<name>@<version>"`` are read as
        ``model: <name>`` + ``model_version: <version>`` (one wire form after validation)."""
        if not isinstance(data, dict):
            return data
        model, pinned = data.get("model"), data.get("model_version")
        if isinstance(model, str) and "@" in model:
            model, _, in_model = model.partition("@")
            if pinned is not None and pinned not in (in_model, f"{model}@{in_model}"):
                raise ValueError(f"model pins version {in_model!r} but model_version is {pinned!r}")
            data = {**data, "model": model, "model_version": in_model}
        elif isinstance(pinned, str) and "@" in pinned:
            named, _, version = pinned.partition("@")
            if named != model:
                raise ValueError(f"model_version {pinned!r} is a version of {named!r}, not of {model!r}")
            data = {**data, "model_version": version}
        return data

    @model_validator(mode="after")
    def _generation_only_for_generate(self) -> InferenceRequest:
        if self.generation is not None and self.task is not Task.GENERATE:
            raise ValueError(f"generation parameters are for task 'generate', not {self.task.value!r}")
        return self

    @model_validator(mode="after")
    def _encoding_only_for_embed(self) -> InferenceRequest:
        if self.encoding is not None and self.task is not Task.EMBED:
            raise ValueError(f"encoding is for task 'embed', not {self.task.value!r}")
        return self

    @model_validator(mode="after")
    def _inputs_or_messages(self) -> InferenceRequest:
        if (self.inputs is None) == (self.messages is None):
            raise ValueError("send exactly one of `inputs` (texts) and `messages` (a conversation)")
        if self.messages is not None:
            if self.task is not Task.GENERATE:
                raise ValueError(f"messages are for task 'generate', not {self.task.value!r}")
            chars = sum(len(m.content) for m in self.messages)
            if chars > MAX_CHAT_CHARS:
                raise ValueError(f"messages hold {chars} characters in all; the limit is {MAX_CHAT_CHARS}")
        return self

    @field_validator("inputs")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("inputs must hold at least one text")
        return v

    def texts(self) -> list[str]:
        """The inputs as a list, whatever form they were sent in. A chat request has one input, shown
        here as its last message's content (for previews and counts; the decoder renders the whole
        conversation with the model's template)."""
        if self.messages is not None:
            return [self.messages[-1].content]
        if self.inputs is None:
            return []
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)

    def deadline_ms(self) -> float | None:
        return self.deadline.timestamp() * 1000.0 if self.deadline else None

    def wire_json(self) -> str:
        """The request as published and digested: fields left unset (None) are omitted, so a newer
        producer or intake that knows more optional fields still speaks to older consumers."""
        return self.model_dump_json(exclude_none=True)

    def wire_dict(self) -> dict[str, Any]:
        """:meth:`wire_json` as a JSON-ready dict (what the intake hands to Celery)."""
        return self.model_dump(mode="json", exclude_none=True)

    def generation_params(self) -> GenerationParams:
        """The decoding parameters, defaults filled in."""
        return self.generation or GenerationParams()


class ErrorInfo(_Model):
    code: ErrorCode
    message: str
    hint: str = ""
    detail: Any = None


def _nulls_as_nan(values: list[Any]) -> list[Any]:
    """``null`` read back as NaN: JSON has no NaN nor infinity, so a non-finite float (a model that
    overflowed) is written as ``null`` (pydantic's form, and orjson's); refusing it on the way back
    made the whole stored result unreadable to every reader."""
    return [math.nan if x is None else x for x in values] if None in values else values


class PackedFloats(str):
    """An embedding already written as a JSON array (``"[0.1,-0.2,...]"``, the bytes pydantic would
    write for the same floats), made by a worker without a Python float per value. Only
    :func:`schemas.results.result_json` writes it as it is; anything else reads it as the floats."""

    def floats(self) -> list[float]:
        """The values (``null``, pydantic's form of a non-finite float, reads as NaN)."""
        return [float("nan") if x is None else float(x) for x in json.loads(self)]


class EmbeddingOutput(_Model):
    kind: Literal["embedding"] = "embedding"
    embedding: list[float] | str = Field(
        description="The vector: a JSON array of numbers (`null` where the model gave no finite number, "
        "read as NaN), or with the request's `encoding` base64 of its little-endian float32 (`base64`) or "
        "float16 (`base64-f16`) bytes"
    )
    encoding: EmbeddingEncoding | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="Set when `embedding` is base64: the request's encoding (absent: a JSON array)",
    )

    @field_validator("embedding", mode="before")
    @classmethod
    def _null_is_nan(cls, v: Any) -> Any:
        return _nulls_as_nan(v) if isinstance(v, list) else v

    @field_serializer("embedding")
    def _unpacked(self, v: list[float] | str) -> list[float] | str:
        return v.floats() if isinstance(v, PackedFloats) else v

    def floats(self) -> list[float]:
        """The vector as floats, whatever its encoding (base64 decoded here; with numpy,
        ``np.frombuffer(base64.b64decode(out.embedding), "<f4")`` (``"<f2"`` for base64-f16) is
        faster). Raises ``ValueError`` when the text is not the encoding's bytes."""
        v = self.embedding
        if isinstance(v, PackedFloats):
            return v.floats()
        if isinstance(v, list):
            return v
        width, code = (2, "e") if self.encoding is EmbeddingEncoding.BASE64_F16 else (4, "f")
        try:
            raw = base64.b64decode(v, validate=True)
        except binascii.Error as e:
            raise ValueError(f"embedding is not base64: {e}") from e
        if len(raw) % width:
            raise ValueError(f"embedding holds {len(raw)} bytes, not a whole number of {width}-byte floats")
        return list(struct.unpack(f"<{len(raw) // width}{code}", raw))


class LabelScore(_Model):
    label: str
    score: float = Field(description="Probability (`null`: the model gave no finite number; read as NaN)")

    @field_validator("score", mode="before")
    @classmethod
    def _null_is_nan(cls, v: Any) -> Any:
        return math.nan if v is None else v


class ClassifyOutput(_Model):
    kind: Literal["classification"] = "classification"
    labels: list[LabelScore] = Field(description="Best first")


class FinishReason(str, Enum):
    """Why a generation ended."""

    STOP = "stop"  # a stop sequence was produced (it is cut from the text)
    EOS = "eos"  # the model produced its end-of-sequence token
    LENGTH = "length"  # max_new_tokens, the operator's cap, or the model's context was reached
    DEADLINE = "deadline"  # the request's deadline passed mid-way (status expired, text so far kept)
    CANCELLED = "cancelled"  # cancelled mid-way (status cancelled, text so far kept)


class GenerationOutput(_Model):
    kind: Literal["generation"] = "generation"
    text: str = Field(description="The text generated so far (the whole of it once finished)")
    tokens: int = Field(description="Tokens generated so far")
    finish_reason: FinishReason | None = Field(None, description="None while the generation runs")


Output = Annotated[EmbeddingOutput | ClassifyOutput | GenerationOutput, Field(discriminator="kind")]


class Timings(_Model):
    """Epoch milliseconds at each stage, and the batch this request ran in."""

    published_ms: float | None = Field(None, description="Kafka record timestamp (producer clock)")
    received_ms: float | None = Field(None, description="Intake read it from Kafka")
    queued_ms: float | None = Field(None, description="Intake handed it to Celery")
    batch_start_ms: float | None = None
    first_token_ms: float | None = Field(None, description="generate: the first token was produced")
    done_ms: float | None = None
    batch_size: int | None = Field(None, description="Texts in the forward pass that served it")
    batch_id: str | None = None


class InferenceResult(_Model):
    schema_version: Literal[1] = 1
    request_id: RequestId
    status: ResultStatus
    task: Task | None = None
    model: str | None = None
    model_version: str | None = None
    tenant: str | None = None
    outputs: list[Output] | None = Field(None, description="One per input text, in input order")
    cached: list[int] | None = Field(
        None,
        exclude_if=lambda v: v is None,
        description="Indices of the inputs whose output came from the result cache, in order "
        "(absent when none did)",
    )
    error: ErrorInfo | None = None
    timings: Timings = Field(default_factory=Timings)
    trace_id: str | None = Field(
        None,
        pattern=TRACE_ID_PATTERN,
        description="W3C trace id of the request's trace: the producer's `traceparent` header's, else one "
        "the intake started; every log record of the request carries it as `trace.id`",
    )
    # the span the request's log records name (`span.id`): the receiving service's span for it;
    # internal, never serialized (kept by the object its writer built)
    _span_id: str | None = PrivateAttr(None)
    # whether its request pinned its version (internal, never serialized): per-version counts that
    # judge a canary leave pinned results out (workers.store.versions)
    _pinned: bool = PrivateAttr(False)

    @property
    def span_id(self) -> str | None:
        return self._span_id

    @property
    def pinned(self) -> bool:
        return self._pinned


class StreamChunk(_Model):
    """generate with ``stream_to_kafka``: new text of one input, on ``<prefix>.stream`` (key = request id).

    Chunks of a request arrive in order; concatenated per ``index`` they give the final text. The
    last chunk of an input carries its ``finish_reason``; the result in Redis remains the record.
    """

    schema_version: Literal[1] = 1
    request_id: str
    index: int = Field(description="Which input of the request this continues")
    text: str = Field(description="Text added since the previous chunk of this input")
    tokens: int = Field(description="Tokens generated so far for this input")
    finish_reason: FinishReason | None = None


class DeadLetter(_Model):
    """What the intake publishes for a message it could not accept, with the reason (built only by
    :mod:`schemas.deadletter`, which keeps it under the producer's limit)."""

    schema_version: Literal[1] = 1
    error: ErrorInfo
    request_id: str | None = Field(None, description="The id, where one could be read from the message")
    source_topic: str
    source_partition: int
    source_offset: int
    key: str | None = None
    payload: str = Field(
        description="The original message, decoded as UTF-8 with replacement characters; only its head "
        "when `payload_truncated` (a letter never exceeds INFERQ_DEADLETTER_MAX_BYTES)"
    )
    payload_bytes: int | None = Field(None, description="Size of the original message in bytes")
    payload_sha256: str | None = Field(None, description="SHA-256 (hex) of the original message's bytes")
    payload_truncated: bool = Field(False, description="`payload` holds only the head of the message")
    attempts: int = 1
    dead_lettered_at: datetime
