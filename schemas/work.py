"""The work item: what the intake hands a worker for one request, through Celery and the store.

Internal to inferq (intake → worker), not part of the public contract. One Celery message carries
a list of work items for one model, each in its wire form (:meth:`WorkItem.wire`, plain JSON):
``{"request": <InferenceRequest wire dict>, "timings": {...}, "source": {...}, "trace": {...}}``
(``trace``: the request's W3C trace context, :mod:`schemas.tracing`). The store keeps
each queued request's :class:`Handoff` (its queue, its priority and that same item) so a message
lost on its way to a worker can be sent again.

The wire form is the one intakes have always sent, so an older intake and a newer worker (or the
reverse) keep speaking during a rolling deploy: keys a reader does not know are ignored at this
level (the request itself forbids unknown fields, so a request from a newer producer fails as
``validation_error``, answered and dead-lettered by the worker).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError

from schemas.messages import InferenceRequest, Timings
from schemas.tracing import TraceContext, from_wire, to_wire


class Source(BaseModel):
    """Where a request came from: its Kafka record (for dead letters). ``-1``: not known."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    topic: str = ""
    partition: int = -1
    offset: int = -1
    key: str | None = Field(None, description="the record's key, cut to a bounded size")


def _read_trace(value: object) -> TraceContext | None:
    return value if isinstance(value, TraceContext) else from_wire(value)


def _write_trace(value: TraceContext | None) -> dict[str, str] | None:
    return None if value is None else to_wire(value)


# read leniently: an item without one (an older intake), or with one that is not valid, is served
# all the same (without a trace); written as {"traceparent": ..., "tracestate": ...}
Trace = Annotated[TraceContext | None, PlainValidator(_read_trace), PlainSerializer(_write_trace)]


class WorkItem(BaseModel):
    """One request as a worker receives it: the request, its timings so far (epoch ms) and source."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request: InferenceRequest
    timings: Timings = Field(default_factory=Timings)
    source: Source | None = None
    trace: Trace = Field(None, description="the intake's span for the request: its children's parent")
    version: str | None = Field(
        None,
        description="the model version the intake routed it to (pinned, or by the rollout); None = the "
        "model's default build (:mod:`schemas.versions`)",
    )

    @classmethod
    def parse(cls, raw: object) -> WorkItem:
        """Read one item of a Celery message.

        Raises ``TypeError`` (not a JSON object, or timings that are not one) or ``KeyError`` (no
        request): a malformed message, answered ``internal_error``; or pydantic's ``ValidationError``
        (the request, or a field of its timings, does not validate: typically a newer intake),
        answered ``validation_error``.
        """
        if not isinstance(raw, dict):
            raise TypeError(f"a work item is a JSON object, not a {type(raw).__name__}")
        if "request" not in raw:
            raise KeyError("request")
        # read as "none known", as workers always have: empty timings (None, {}, [], "", 0), and the
        # fields of a source that do not validate (it only places dead letters; the request is served)
        if not raw.get("timings", True):
            raw = {k: v for k, v in raw.items() if k != "timings"}
        try:
            return cls.model_validate(raw)  # one validation for every well-formed item
        except ValidationError as first:
            error = first
            if raw.get("source") is not None and any(err["loc"][:1] == ("source",) for err in first.errors()):
                raw = {**raw, "source": _readable_fields(Source, raw["source"])}
                try:
                    return cls.model_validate(raw)
                except ValidationError as again:
                    error = again
        timings = raw.get("timings")
        if not isinstance(timings, dict) and all(err["loc"][:1] == ("timings",) for err in error.errors()):
            # the item itself is malformed (answered internal_error), not a request this worker
            # cannot read; as workers always have: a request that does not validate comes first
            raise TypeError(f"timings is a {type(timings).__name__}") from error
        raise error

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form a Celery message carries (unset fields left out, as the request's own
        wire form does)."""
        return self.model_dump(mode="json", exclude_none=True)


def _readable(model: type[BaseModel], value: object) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def _readable_fields(model: type[BaseModel], value: object) -> dict[str, Any] | None:
    """The fields of ``value`` that ``model`` reads each on its own; None if it is not an object."""
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if k in model.model_fields and _readable(model, {k: v})}


class Handoff(BaseModel):
    """A queued request's way to the workers, kept by the store until the request starts: its Celery
    queue and priority, and its item in wire form (sent again exactly as kept; the worker that takes
    it reads it, and answers it if it cannot)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    queue: str
    priority: int
    item: dict[str, Any]

    @classmethod
    def of(cls, queue: str, priority: int, item: WorkItem) -> Handoff:
        return cls(queue=queue, priority=priority, item=item.wire())

    @property
    def model(self) -> str | None:
        """The model its request names, read from the wire form (routing only: the item may be one
        this process cannot parse whole)."""
        request = self.item.get("request")
        model = request.get("model") if isinstance(request, dict) else None
        return model if isinstance(model, str) else None

    @property
    def served_as(self) -> str | None:
        """The name a worker serving this hand-off advertises: ``<model>`` or ``<model>@<version>``
        (:class:`schemas.versions.Route`); None when the model cannot be read."""
        model = self.model
        version = self.item.get("version")
        if model is None or not isinstance(version, str):
            return model
        return f"{model}@{version}"

    def work(self) -> WorkItem:
        """The item, parsed (raises as :meth:`WorkItem.parse`)."""
        return WorkItem.parse(self.item)
