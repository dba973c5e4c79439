"""The Python client: publish requests to Kafka, read and wait for results in Redis.

    with InferqClient() as client:
        rid = client.submit("embed", "all-MiniLM-L6-v2", ["first text", "second text"])
        result = client.wait(rid, timeout_s=30)

Publishing uses ``acks=all`` and the request id as the key, so retries of one request land in one
partition, in order. Reading goes straight to the result store; the HTTP API serves the same data.
Waiting blocks on the store's ``done`` channel (Redis pub/sub) and reads a result the moment it is
written; a slow re-read of everything pending covers a missed message.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from schemas.connections import kafka_client_options
from schemas.messages import (
    GenerationParams,
    InferenceRequest,
    InferenceResult,
    Priority,
    ResultStatus,
    Task,
    now_ms,
)
from schemas.naming import requests_topic
from schemas.settings import Settings, get_settings
from workers.doorbell import Doorbell
from workers.result_store import Admission, DoneWatcher, ResultStore, queued_result, request_digest
from workers.tenancy import parse_keys, signed_headers

SWEEP_S = 0.5  # re-read everything pending this often, in case a pub/sub message was missed


class InferqClient:
    """Thread-safe for publishing (kafka-python's producer is); one per process is enough."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        linger_ms: int = 2,
        tenant: str | None = None,
        tenant_key: bytes | str | None = None,
    ) -> None:
        """``tenant`` is the default tenant of :meth:`submit`; with ``tenant_key`` (bytes, or hex)
        records are signed as that tenant (``INFERQ_KAFKA_TENANT_AUTH=signed``,
        :mod:`workers.tenancy`). Under ``signed`` a trusted process holding the tenants' keys
        (``INFERQ_KAFKA_TENANT_KEYS``, e.g. the HTTP API) signs each request as its tenant."""
        self.settings = settings or get_settings()
        self._linger_ms = linger_ms
        self.tenant = tenant
        self._tenant_key = bytes.fromhex(tenant_key) if isinstance(tenant_key, str) else tenant_key
        if self._tenant_key is not None and not tenant:
            raise ValueError("a tenant_key signs as one tenant: give its tenant too")
        self._keys: dict[str, bytes] | None = None  # INFERQ_KAFKA_TENANT_KEYS, parsed when first needed
        self._producer: KafkaProducer | None = None
        self._store: ResultStore | None = None
        self._doorbell: Doorbell | None = None

    # -- publishing ---------------------------------------------------------------------------
    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(
                **kafka_client_options(self.settings),
                acks="all",
                linger_ms=self._linger_ms,
                retries=5,
                max_request_size=self.settings.kafka_max_message_bytes,
            )
        return self._producer

    def submit(
        self,
        task: Task | str,
        model: str,
        inputs: str | Sequence[str],
        *,
        request_id: str | None = None,
        tenant: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        deadline: datetime | None = None,
        top_k: int = 5,
        generation: GenerationParams | dict[str, Any] | None = None,
    ) -> str:
        """Publish one request (validated here first); returns its request id.

        ``generation`` (task ``generate``): ``max_new_tokens``, ``temperature``, ``top_p``,
        ``stop``, ``seed``, ``stream_to_kafka`` — see :class:`schemas.messages.GenerationParams`.
        """
        fields: dict[str, Any] = dict(
            task=task,
            model=model,
            inputs=inputs if isinstance(inputs, str) else list(inputs),
            tenant=tenant if tenant is not None else self.tenant,
            priority=priority,
            deadline=deadline,
            top_k=top_k,
            generation=generation,
        )
        if request_id is not None:
            fields["request_id"] = request_id
        request = InferenceRequest.model_validate(fields)
        self.publish(request)
        return request.request_id

    def publish(self, request: InferenceRequest) -> FutureRecordMetadata:
        """Publish an already built request; the future resolves when the broker has it."""
        return self.publish_raw(request.request_id, request.wire_json().encode(), tenant=request.tenant)

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

    def publish_raw(
        self, key: str | None, value: bytes, *, tenant: str | None = None
    ) -> FutureRecordMetadata:
        """Publish bytes as they are (for tools and tests that send what they like).

        With a key for ``tenant`` (default: this client's tenant) the record is signed as it.
        Once the broker has the record, the intake's doorbell is rung (``intake_doorbell``), so an
        idle intake picks it up at once instead of at its next poll.
        """
        signer = tenant if tenant is not None else self.tenant
        secret = self._signing_key(signer)
        headers = signed_headers(signer, secret, value) if signer and secret else None
        future = self.producer.send(
            requests_topic(self.settings), key=key.encode() if key else None, value=value, headers=headers
        )
        if self.settings.intake_doorbell:
            if self._doorbell is None:
                self._doorbell = Doorbell(self.settings)
            future.add_callback(self._doorbell.ring)
        return future

    def admit(self, request: InferenceRequest) -> Admission:
        """Record ``request`` as ``queued`` before publishing, so its result is readable at once.

        The intake recognises the request as already admitted and hands it on as usual.
        """
        received = {"received_ms": now_ms()}
        deadline = request.deadline_ms()
        (verdict,) = self.store.admit(
            [(request_digest(request), queued_result(request, received))],
            {request.request_id: deadline} if deadline is not None else None,
        )
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

    def result(self, request_id: str) -> InferenceResult | None:
        """The result as it stands now (any status), or None if the id is unknown."""
        return self.store.get(request_id)

    def wait(self, request_id: str, timeout_s: float = 60.0) -> InferenceResult:
        """Block until the request reaches a terminal status; TimeoutError after ``timeout_s``."""
        return self.wait_all([request_id], timeout_s)[request_id]

    def wait_all(
        self, request_ids: Iterable[str], timeout_s: float = 60.0, *, on_done: Any = None
    ) -> dict[str, InferenceResult]:
        """Block until every id is terminal; TimeoutError after ``timeout_s``.

        ``on_done(result)`` is called once per request as it finishes (progress bars use it).
        """
        self.flush()
        pending = set(request_ids)
        done: dict[str, InferenceResult] = {}
        give_up = time.monotonic() + timeout_s

        def collect(ids: Iterable[str]) -> None:
            chunk = [rid for rid in ids if rid in pending]
            for i in range(0, len(chunk), 500):
                for rid, res in self.store.get_many(chunk[i : i + 500]).items():
                    if res is not None and res.status.terminal:
                        done[rid] = res
                        pending.discard(rid)
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
                        f"after {timeout_s} s (first: {next(iter(pending))})"
                    )
                collect(watcher.finished(min(SWEEP_S, give_up - now)))
                if time.monotonic() - last_sweep >= SWEEP_S:  # covers a missed message
                    collect(list(pending))
                    last_sweep = time.monotonic()
        return done

    def cancel(self, request_id: str) -> ResultStatus | None:
        """Cancel a request that has not started yet, or stop a running generation.

        Returns ``cancelled`` when it is (now) cancelled; ``running`` when it already runs — a
        generation is then being stopped, and ``wait()`` returns it ``cancelled`` with the text
        so far; its terminal status when it was too late; None when the id is unknown.
        """
        return self.store.cancel(request_id).status

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
