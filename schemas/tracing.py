"""W3C trace context (https://www.w3.org/TR/trace-context/): reading and writing ``traceparent``.

A request's trace follows it from its producer through the intake, the Celery work item and the
batch to its result: the producer (our client, or any Kafka client: ``kcat -H traceparent=...``)
puts a ``traceparent`` header on the record or the HTTP request; the intake reads it, names its
own span for the request (a child of the producer's) and carries that context in the work item;
the result gets the trace id (``InferenceResult.trace_id``) and every ECS record of the request
carries ``trace.id`` and ``span.id``. Without a readable header the intake starts a new trace.

A header is attacker-controlled: it is read strictly (the version 00 form, or a later version read
as its first four fields, as the spec asks), in bounded time, and anything else is ignored, never
an error for the request. ``tracestate`` is vendor data we only pass on: carried only while short
and printable ASCII. The context is a few short strings, carried along at no cost on the hot path.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACEPARENT_MAX_CHARS = 256  # a later version may append fields; anything longer is not read at all
TRACESTATE_MAX_CHARS = 512  # what the spec asks every vendor to pass on; longer is dropped
SAMPLED = 0x01

# version, trace id, parent id, flags; a later version may append "-..." (read by the first four)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x20-\x7e]*)?")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_STATE = re.compile(r"[\x20-\x7e]*")  # printable ASCII; its list syntax is the vendors' business
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_random = random.Random()  # ids need to be unique, not secret (as OpenTelemetry's own generator)


def new_trace_id() -> str:
    """128 random bits as 32 lower-case hex digits (never all zero)."""
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """64 random bits as 16 lower-case hex digits (never all zero)."""
    return f"{_random.getrandbits(64) or 1:016x}"


class TraceContext(NamedTuple):
    """One span's context: its trace, its own span id, its flags (bit 0: sampled) and the vendors'
    ``tracestate``. What is carried between stages names the sending stage's span: the receiver
    makes its own span a child of it (:meth:`child`). A tuple: made on every request's path."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED
    state: str | None = None
    parent_id: str | None = None  # the span this one is a child of, where known here (not carried)

    @classmethod
    def new(cls) -> TraceContext:
        """The root of a new trace (sampled): a request that came without a readable header."""
        return cls(new_trace_id(), new_span_id())

    def child(self) -> TraceContext:
        """A new span of the same trace, whose parent is this one (flags and state kept)."""
        return TraceContext(self.trace_id, new_span_id(), self.flags, self.state, self.span_id)

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    @property
    def traceparent(self) -> str:
        """The version 00 header naming this span (as the parent of whatever receives it)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka record headers that carry this context."""
        out = [(TRACEPARENT, self.traceparent.encode())]
        if self.state:
            out.append((TRACESTATE, self.state.encode()))
        return out


def parse_traceparent(value: str | bytes | None, state: str | bytes | None = None) -> TraceContext | None:
    """The context a ``traceparent`` header names, or None when it is absent or not valid.

    Version 00 is exactly ``00-<32 hex>-<16 hex>-<2 hex>``, lower case, neither id all zeros. A
    later version (not ``ff``) is read by its first four fields, provided what follows them starts
    with ``-`` (the spec's forward compatibility). ``state`` (``tracestate``) is kept only when the
    parent is valid and it is printable ASCII of at most ``TRACESTATE_MAX_CHARS``.
    """
    if value is None or len(value) > TRACEPARENT_MAX_CHARS:
        return None
    if isinstance(value, bytes):
        if not value.isascii():
            return None
        value = value.decode("ascii")
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))  # optional whitespace around an HTTP header
    if match is None:
        return None
    version, trace_id, span_id, flags, more = match.groups()
    if version == "ff" or (version == "00" and more is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16) & SAMPLED, _state(state) if state else None)


def _state(state: str | bytes | None) -> str | None:
    if state is None or len(state) > TRACESTATE_MAX_CHARS:
        return None
    if isinstance(state, bytes):
        if not state.isascii():
            return None
        state = state.decode("ascii")
    state = state.strip(" \t")
    return state if state and _STATE.fullmatch(state) else None


class Incoming(NamedTuple):
    """What a request came with: its sender's context (None: none readable), and whether a
    ``traceparent`` was there but ignored (invalid, or repeated: counted, never an error)."""

    parent: TraceContext | None
    ignored: bool


NOTHING = Incoming(None, False)


def from_record_headers(headers: Iterable[tuple[str, bytes]] | None) -> Incoming:
    """The context of a Kafka record's headers (a repeated or invalid ``traceparent`` is ignored).

    Headers are a list an attacker may make long: read once, stopping at the first repeat. Several
    ``tracestate`` headers are one list, joined with commas (as HTTP combines them).
    """
    parent: bytes | None = None
    states: list[bytes] = []
    state_bytes = 0  # past TRACESTATE_MAX_CHARS the state is dropped: nothing more is kept of it
    for name, value in headers or ():
        if name == TRACEPARENT:
            if parent is not None:
                return Incoming(None, True)  # two parents: neither is trusted
            parent = value if isinstance(value, bytes) else b""
        elif name == TRACESTATE and isinstance(value, bytes):
            state_bytes += len(value) + 1
            if state_bytes <= TRACESTATE_MAX_CHARS + 1:
                states.append(value)
    if parent is None:
        return NOTHING
    state = b",".join(states) if states and state_bytes <= TRACESTATE_MAX_CHARS + 1 else None
    context = parse_traceparent(parent, state)
    return Incoming(context, context is None)


def from_http_headers(parents: list[str], states: list[str]) -> Incoming:
    """The context of an HTTP request's ``traceparent`` and ``tracestate`` values (each list: every
    occurrence of the header). More than one ``traceparent`` is ignored, as the spec asks."""
    if not parents:
        return NOTHING
    if len(parents) != 1:
        return Incoming(None, True)
    fits = states and sum(len(v) + 1 for v in states) <= TRACESTATE_MAX_CHARS + 1
    context = parse_traceparent(parents[0], ",".join(states) if fits else None)
    return Incoming(context, context is None)


def received(parent: TraceContext | None) -> TraceContext:
    """The span a service opens for a request it received: a child of the sender's, or the root
    of a new trace when the request came without a readable context."""
    return parent.child() if parent is not None else TraceContext.new()


def from_wire(value: object) -> TraceContext | None:
    """A work item's ``trace`` (``{"traceparent": ..., "tracestate": ...}``), or None for anything
    else: an item of an older intake has none, and a malformed one is not the request's fault."""
    if not isinstance(value, Mapping):
        return None
    parent, state = value.get(TRACEPARENT), value.get(TRACESTATE)
    if not isinstance(parent, str) or not (state is None or isinstance(state, str)):
        return None
    return parse_traceparent(parent, state)


def to_wire(trace: TraceContext) -> dict[str, str]:
    """A context as a work item carries it (read back by :func:`from_wire`)."""
    wire = {TRACEPARENT: trace.traceparent}
    if trace.state:
        wire[TRACESTATE] = trace.state
    return wire


def valid_trace_id(value: object) -> bool:
    """Whether ``value`` is a trace id as results carry it (32 lower-case hex, not all zeros)."""
    return isinstance(value, str) and bool(_TRACE_ID.fullmatch(value)) and value != _ZERO_TRACE


def valid_span_id(value: object) -> bool:
    return isinstance(value, str) and bool(_SPAN_ID.fullmatch(value)) and value != _ZERO_SPAN
