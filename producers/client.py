"""The Python client: publish requests to Kafka, read and wait for results in Redis.

    with InferqClient() as client:
        rid = client.submit("embed", "all-MiniLM-L6-v2", ["first text", "second text"])
        result = client.wait(rid, timeout_s=30)

Publishing uses ``acks=all`` and the request id as the key, so retries of one request land in one
partition, in order. Reading goes straight to the result store; the HTTP API serves the same data.
Waiting blocks on the store's ``done`` channel (Redis pub/sub) and reads a result the moment it is
written; a slow re-read of everything pending covers a missed message.

Request ids are scoped per tenant (:func:`schemas.naming.scoped_id`): reading, waiting for or
cancelling a tenant's request takes its ``tenant``, which defaults to the tenant this client
published the id with (when it did).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from schemas.connections import kafka_producer
from schemas.messages import (
    ChatMessage,
    EmbeddingEncoding,
    GenerationParams,
    InferenceRequest,
    InferenceResult,
    Priority,
    ResultStatus,
    Task,
    now_ms,
)
from schemas.naming import ADMITTED_HEADER, requests_topic, scoped_id
from schemas.observer import PUBLISH_SPAN, Observer, RequestSpan
from schemas.replies import targets_json
from schemas.results import queued_result
from schemas.settings import Settings, get_settings
from schemas.tenancy import parse_keys, signed_headers
from schemas.tracing import TraceContext, parse_traceparent
from workers.store.doorbell import Doorbell
from workers.store.store import Admission, DoneWatcher, ResultStore, request_digest

SWEEP_S = 0.5  # re-read everything pending this often, in case a pub/sub message was missed
REMEMBERED_TENANTS = 100_000  # the tenants of this many recent publications are remembered


class _Delivered(NamedTuple):
    """What :meth:`Doorbell.ring <workers.store.doorbell.Doorbell.ring>` reads of a delivered record."""

    partition: int


class InferqClient:
    """Thread-safe for publishing (kafka-python's producer is); one per process is enough."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        linger_ms: int = 2,
        tenant: str | None = None,
        tenant_key: bytes | str | None = None,
        observer: Observer | None = None,
    ) -> None:
        """``tenant`` is the default tenant of :meth:`submit`; with ``tenant_key`` (bytes, or hex)
        records are signed as that tenant (``INFERQ_KAFKA_TENANT_AUTH=signed``,
        :mod:`schemas.tenancy`). Under ``signed`` a trusted process holding the tenants' keys
        (``INFERQ_KAFKA_TENANT_KEYS``, e.g. the HTTP API) signs each request as its tenant."""
        self.settings = settings or get_settings()
        self.observer = observer or Observer()  # spans of what it publishes, when it exports them
        self._linger_ms = linger_ms
        self.tenant = tenant
        self._tenant_key = bytes.fromhex(tenant_key) if isinstance(tenant_key, str) else tenant_key
        if self._tenant_key is not None and not tenant:
            raise ValueError("a tenant_key signs as one tenant: give its tenant too")
        self._keys: dict[str, bytes] | None = None  # INFERQ_KAFKA_TENANT_KEYS, parsed when first needed
        self._producer: Any = None
        self._ring_lock = threading.Lock()
        self._ring_partitions: set[int] = set()  # doorbells to ring after a round of deliveries
        self._rung_batches: dict[int, object] = {}  # partition → the last batch its doorbell rang for
        self._store: ResultStore | None = None
        self._doorbell: Doorbell | None = None
        # scoped ids admitted here and not yet published (a header marks them)
        self._admitted: set[str] = set()
        # request id → tenant of the requests this client published with a tenant (the newest)
        self._tenants: OrderedDict[str, str] = OrderedDict()

    def tenant_of(self, request_id: str, tenant: str | None = None) -> str | None:
        """``tenant`` if given, else the tenant this client published ``request_id`` with."""
        return tenant if tenant is not None else self._tenants.get(request_id)

    # -- publishing ---------------------------------------------------------------------------
    @property
    def producer(self) -> Any:
        """kafka-python's ``KafkaProducer``, or its interface over librdkafka
        (``INFERQ_KAFKA_CLIENT=confluent``, :mod:`schemas.confluent`)."""
        if self._producer is None:
            self._producer = kafka_producer(
                self.settings,
                linger_ms=self._linger_ms,
                retries=5,
                max_request_size=self.settings.kafka_max_message_bytes,
            )
            if hasattr(self._producer, "after_deliveries"):  # rings once per partition per round
                self._producer.after_deliveries = self._ring_due
        return self._producer

    def submit(
        self,
        task: Task | str,
        model: str,
        inputs: str | Sequence[str] | None = None,
        *,
        messages: Sequence[ChatMessage | dict[str, str] | tuple[str, str]] | None = None,
        request_id: str | None = None,
        tenant: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        deadline: datetime | None = None,
        top_k: int = 5,
        generation: GenerationParams | dict[str, Any] | None = None,
        encoding: EmbeddingEncoding | str | None = None,
        traceparent: str | TraceContext | None = None,
        reply_topic: str | None = None,
    ) -> str:
        """Publish one request (validated here first); returns its request id.

        ``generation`` (task ``generate``): ``max_new_tokens``, ``temperature``, ``top_p``,
        ``stop``, ``seed``, ``stream_to_kafka`` — see :class:`schemas.messages.GenerationParams`.
        ``encoding`` (task ``embed``): ``base64`` or ``base64-f16`` for compact embeddings; read
        them back with :meth:`schemas.messages.EmbeddingOutput.floats`.
        ``messages`` (task ``generate``, instead of ``inputs``): a conversation, as
        :class:`~schemas.messages.ChatMessage`, ``{"role", "content"}`` dicts or ``(role, content)``
        pairs; the model answers with the assistant's next turn (see :meth:`chat`).
        ``traceparent``: the caller's W3C trace context, continued by the request (see :meth:`publish`).
        ``reply_topic``: also publish the terminal result to this Kafka topic (key = request id;
        the deployment allows it per tenant: ``INFERQ_REPLY_TOPICS``).
        """
        fields: dict[str, Any] = dict(
            task=task,
            model=model,
            inputs=inputs if inputs is None or isinstance(inputs, str) else list(inputs),
            messages=None if messages is None else [_turn(m) for m in messages],
            tenant=tenant if tenant is not None else self.tenant,
            priority=priority,
            deadline=deadline,
            top_k=top_k,
            generation=generation,
        )
        if encoding is not None:
            fields["encoding"] = encoding
        if reply_topic is not None:
            fields["reply_topic"] = reply_topic
        if request_id is not None:
            fields["request_id"] = request_id
        request = InferenceRequest.model_validate(fields)
        self.publish(request, traceparent=traceparent)
        return request.request_id

    def chat(
        self,
        model: str,
        messages: Sequence[ChatMessage | dict[str, str] | tuple[str, str]],
        **kw: Any,
    ) -> str:
        """Publish a conversation to a chat model (task ``generate``); returns the request id.

        ``client.wait(client.chat("smollm2-135m-instruct", [("user", "Hi!")]))`` holds the answer in
        ``outputs[0].text``. Keyword arguments are :meth:`submit`'s.
        """
        return self.submit(Task.GENERATE, model, messages=messages, **kw)

    def publish(self, request: InferenceRequest, *, traceparent: str | TraceContext | None = None) -> Any:
        """Publish an already built request; the future resolves when the broker has it.

        The record carries a W3C ``traceparent`` header naming this publication's span: a child of
        ``traceparent`` when given (the caller's trace: the result's ``trace_id`` is then its trace
        id), else the root of a new trace. ValueError for a ``traceparent`` that is not valid."""
        span = _publish_span(traceparent)
        if request.tenant is not None:
            self._tenants[request.request_id] = request.tenant
            self._tenants.move_to_end(request.request_id)
            while len(self._tenants) > REMEMBERED_TENANTS:
                self._tenants.popitem(last=False)
        sid = scoped_id(request.tenant, request.request_id)
        admitted = sid in self._admitted
        self._admitted.discard(sid)
        headers = [(ADMITTED_HEADER, b"1"), *span.headers()] if admitted else span.headers()
        future = self.publish_raw(
            request.request_id, request.wire_json().encode(), tenant=request.tenant, headers=headers
        )
        if self.observer.tracing:  # the publish span ends when the broker has the record
            future.add_callback(functools.partial(self._published, request, span, now_ms()))
        return future

    def _published(self, request: InferenceRequest, span: TraceContext, start_ms: float, _meta: Any) -> None:
        self.observer.request_spans(
            [RequestSpan(PUBLISH_SPAN, span, start_ms, now_ms(), request.request_id, request.model)]
        )

    def _signing_key(self, tenant: str | None) -> bytes | None:
        """The key that signs records of ``tenant``: this client's own, else (under ``signed``) the
        tenant's from the settings; None = records go unsigned."""
        if tenant is None:
            return None
        if self._tenant_key is not None and tenant == self.tenant:
            return self._tenant_key
        if self.settings.kafka_tenant_auth != "signed":
            return None
        if self._keys is None:
            self._keys = parse_keys(self.settings.kafka_tenant_keys.get_secret_value())
        return self._keys.get(tenant)

    def can_sign(self, tenant: str | None) -> bool:
        """Whether the intake will take this client's records of ``tenant``: always under
        ``INFERQ_KAFKA_TENANT_AUTH=trust``; under ``signed`` only where a key signs them."""
        return self.settings.kafka_tenant_auth != "signed" or self._signing_key(tenant) is not None

    def publish_raw(
        self,
        key: str | None,
        value: bytes,
        *,
        tenant: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Publish bytes as they are (for tools and tests that send what they like).

        With a key for ``tenant`` (default: this client's tenant) the record is signed as it.
        Once the broker has the record, the intake's doorbell is rung (``intake_doorbell``), so an
        idle intake picks it up at once instead of at its next poll.
        """
        signer = tenant if tenant is not None else self.tenant
        secret = self._signing_key(signer)
        if signer and secret:
            headers = [*(headers or []), *signed_headers(signer, secret, value)]
        future = self.producer.send(
            requests_topic(self.settings), key=key.encode() if key else None, value=value, headers=headers
        )
        if self.settings.intake_doorbell:
            if self._doorbell is None:
                self._doorbell = Doorbell(self.settings)
            if hasattr(self.producer, "after_deliveries"):
                future.add_callback(self._ring_later)  # rung by _ring_due, after the round's deliveries
            else:
                future.add_callback(self._ring_batch, future)
        return future

    def _ring_batch(self, future: Any, metadata: Any) -> None:
        """A record is in the broker (kafka-python): ring its partition's doorbell once per batch.

        kafka-python acknowledges a batch of records as a whole and then calls each record back, so
        the first call back of a batch rings for all of them: they are all in the broker by then.
        The batch is the record's ``_produce_future`` (read at call-back time: a batch split for
        size binds its records to new ones); without it every record rings."""
        batch = getattr(future, "_produce_future", None)
        if batch is not None:
            with self._ring_lock:
                if self._rung_batches.get(metadata.partition) is batch:
                    return
                self._rung_batches[metadata.partition] = batch
        if self._doorbell is not None:
            self._doorbell.ring(metadata)

    def _ring_later(self, metadata: Any) -> None:
        """A record is in the broker: its partition's doorbell is rung after this round of deliveries."""
        with self._ring_lock:
            self._ring_partitions.add(metadata.partition)

    def _ring_due(self) -> None:
        """Ring each partition that got records in the round of deliveries just served: once, after
        all of them (so a ring still follows every record it announces)."""
        with self._ring_lock:
            due, self._ring_partitions = self._ring_partitions, set()
        if self._doorbell is not None:
            for partition in sorted(due):
                self._doorbell.ring(_Delivered(partition))

    def admit(self, request: InferenceRequest, trace: TraceContext | None = None) -> Admission:
        """Record ``request`` as ``queued`` before publishing, so its result is readable at once.

        The intake recognises the request as already admitted and hands it on as usual. Its wire
        JSON is kept until an intake reads it: if the broker loses the record, the intake publishes
        it again (``republish_unseen_after_s``), so it does not stay ``queued`` for ever.
        """
        received = {"received_ms": now_ms()}
        deadline = request.deadline_ms()
        sid = scoped_id(request.tenant, request.request_id)
        targets = targets_json(request, self.settings)
        (verdict,) = self.store.admit(
            [(request_digest(request), queued_result(request, received, trace))],
            {sid: deadline} if deadline is not None else None,
            deliveries={sid: targets} if targets else None,
        )
        if verdict in (Admission.NEW, Admission.PENDING):
            self.store.expect(request)
            if len(self._admitted) > 100_000:  # admitted and never published: a bound, not a leak
                self._admitted.clear()
            self._admitted.add(scoped_id(request.tenant, request.request_id))
        return verdict

    def flush(self, timeout_s: float | None = None) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout_s)

    # -- results --------------------------------------------------------------------------------
    @property
    def store(self) -> ResultStore:
        if self._store is None:
            self._store = ResultStore.from_settings(self.settings)
        return self._store

    def result(self, request_id: str, tenant: str | None = None) -> InferenceResult | None:
        """The result as it stands now (any status), or None if the id is unknown (to ``tenant``)."""
        return self.store.get(request_id, self.tenant_of(request_id, tenant))

    def wait(self, request_id: str, timeout_s: float = 60.0, tenant: str | None = None) -> InferenceResult:
        """Block until the request reaches a terminal status; TimeoutError after ``timeout_s``."""
        return self.wait_all([request_id], timeout_s, tenant=tenant)[request_id]

    def wait_all(
        self,
        request_ids: Iterable[str],
        timeout_s: float = 60.0,
        *,
        on_done: Any = None,
        tenant: str | None = None,
    ) -> dict[str, InferenceResult]:
        """Block until every id is terminal; TimeoutError after ``timeout_s``.

        Each id is read in ``tenant``'s namespace, else in the one this client published it with.
        ``on_done(result)`` is called once per request as it finishes (progress bars use it).
        """
        self.flush()
        ids = list(request_ids)
        # scoped id → request id: the done channel announces scoped ids
        by_sid = {scoped_id(self.tenant_of(rid, tenant), rid): rid for rid in ids}
        pending = set(by_sid)
        done: dict[str, InferenceResult] = {}
        give_up = time.monotonic() + timeout_s

        def collect(sids: Iterable[str]) -> None:
            chunk = [sid for sid in sids if sid in pending]
            for i in range(0, len(chunk), 500):
                part = chunk[i : i + 500]
                for sid, res in self._read_scoped(part).items():
                    if res is not None and res.status.terminal:
                        done[by_sid[sid]] = res
                        pending.discard(sid)
                        if on_done is not None:
                            on_done(res)

        with DoneWatcher(self.store) as watcher:  # subscribed before the first read
            collect(list(pending))
            last_sweep = time.monotonic()
            while pending:
                now = time.monotonic()
                if now >= give_up:
                    raise TimeoutError(
                        f"{len(pending)} of {len(done) + len(pending)} requests not finished "
                        f"after {timeout_s} s (first: {by_sid[next(iter(pending))]})"
                    )
                collect(watcher.finished(min(SWEEP_S, give_up - now)))
                if time.monotonic() - last_sweep >= SWEEP_S:  # covers a missed message
                    collect(list(pending))
                    last_sweep = time.monotonic()
        return done

    def _read_scoped(self, sids: Sequence[str]) -> dict[str, InferenceResult | None]:
        """Results by scoped id, any tenants (one round trip)."""
        return self.store.get_many(sids)  # a scoped id is its own key under no tenant

    def cancel(self, request_id: str, tenant: str | None = None) -> ResultStatus | None:
        """Cancel a request that has not started yet, or stop a running generation.

        Returns ``cancelled`` when it is (now) cancelled; ``running`` when it already runs — a
        generation is then being stopped, and ``wait()`` returns it ``cancelled`` with the text
        so far; its terminal status when it was too late; None when the id is unknown.
        """
        return self.store.cancel(request_id, self.tenant_of(request_id, tenant)).status

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None

    def __enter__(self) -> InferqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _publish_span(traceparent: str | TraceContext | None) -> TraceContext:
    """The span of one publication: a child of the caller's context, or a new trace's root."""
    if traceparent is None:
        return TraceContext.new()
    if isinstance(traceparent, TraceContext):
        return traceparent.child()
    parent = parse_traceparent(traceparent)
    if parent is None:
        raise ValueError(
            f"traceparent {traceparent[:80]!r} is not a W3C trace context: "
            "expected 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lower case, ids not all zero"
        )
    return parent.child()


def _turn(m: ChatMessage | dict[str, str] | tuple[str, str]) -> ChatMessage | dict[str, str]:
    """A conversation turn as the request model takes it (a pair becomes ``{"role", "content"}``)."""
    if isinstance(m, tuple):
        role, content = m
        return {"role": role, "content": content}
    return m
