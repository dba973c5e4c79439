"""Reply topics: terminal results published to Kafka (kind ``kafka``).

Each record's key is the request id and its value the result JSON exactly as stored in Redis, so
every try (and every delivery process) sends the same content: a reader that dedups on the key
sees one result per request. ``acks=all``: a record counts as sent once every in-sync replica has
it. A result with a trace id carries a W3C ``traceparent`` header (a fresh span id per record).

The sink checks the topic again before sending: the pipeline's own topics are never written, and
a ``reply_topic`` must still be one its tenant may name (``INFERQ_REPLY_TOPICS``, maybe narrowed
since admission); the deployment's ``INFERQ_RESULTS_TOPIC`` is always allowed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from schemas.connections import kafka_client_options
from schemas.replies import parse_policy, reserved_topic
from schemas.settings import Settings
from workers.delivery.sink import Delivery, DeliveryFailed

log = logging.getLogger(__name__)

BATCH_BYTES = 512 * 1024  # most bytes of records one produce request carries per partition


def traceparent(trace_id: str) -> bytes:
    """A W3C ``traceparent`` for a record of trace ``trace_id`` (a new span id, sampled)."""
    return f"00-{trace_id}-{secrets.token_hex(8)}-01".encode()


def failure(error: BaseException) -> DeliveryFailed:
    """What a producer error means for a retry: a broker away, a timeout or a retriable Kafka error
    may pass; a record too large or an authorization error never will."""
    name = type(error).__name__
    if isinstance(error, MessageSizeTooLargeError):
        return DeliveryFailed("record_too_large", retryable=False)
    if isinstance(error, KafkaTimeoutError):
        return DeliveryFailed("timeout", retryable=True)
    if isinstance(error, KafkaError):
        return DeliveryFailed(f"kafka_{name}", retryable=bool(getattr(error, "retriable", False)))
    return DeliveryFailed(f"error_{name}", retryable=True)


def _has_metadata(producer: Any, topic: str) -> bool:
    """Whether kafka-python's producer knows ``topic``'s partitions (a send to it will not wait for
    metadata); True where the producer does not say (another client: tried in order)."""
    cluster = getattr(producer, "_metadata", None)
    try:
        return cluster is None or cluster.partitions_for_topic(topic) is not None
    except Exception:
        return True


class KafkaSink:
    """Publishes deliveries to their topics; the producer is made on first use (and again after a
    failure to make it: a broker away at start is a retryable failure, not a crash)."""

    kind = "kafka"

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._producer: Any = None
        self._lock = threading.Lock()

    def allowed(self, delivery: Delivery) -> DeliveryFailed | None:
        """None when ``delivery.target`` may be written, else why not (never retryable)."""
        topic = delivery.target
        if reserved_topic(topic, self._s):
            return DeliveryFailed("reserved_topic", retryable=False)
        if topic != self._s.results_topic and not parse_policy(self._s.reply_topics).allows(
            delivery.tenant, topic
        ):
            return DeliveryFailed("topic_not_allowed", retryable=False)
        return None

    @property
    def producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                timeout_ms = int(self._s.delivery_send_timeout_s * 1000)
                # a broker away at start costs one send timeout, not kafka-python's 30 s bootstrap
                bootstrap = (
                    {"bootstrap_timeout_ms": timeout_ms}
                    if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG
                    else {}
                )
                self._producer = KafkaProducer(
                    **bootstrap,
                    **kafka_client_options(self._s),
                    acks="all",
                    retries=3,
                    linger_ms=2,
                    # a result is a few KiB (an embedding's floats): the default 16 KiB batch would
                    # send a produce request per handful of them, each costing client and broker CPU
                    batch_size=min(BATCH_BYTES, self._s.kafka_max_request_bytes),
                    max_request_size=self._s.kafka_max_request_bytes,
                    max_block_ms=timeout_ms,
                    request_timeout_ms=timeout_ms,
                    # a tenant allowed a prefix must not make the broker create a topic per request
                    allow_auto_create_topics=self._s.delivery_create_topics,
                )
            return self._producer

    def send(self, delivery: Delivery) -> None:
        (failed,) = self.send_many([delivery])
        if failed is not None:
            raise failed

    def send_many(self, deliveries: Sequence[Delivery]) -> list[DeliveryFailed | None]:
        """Send a batch, then wait for the broker's acknowledgements (one flush for all); each
        delivery's failure, or None where the record was acknowledged."""
        out: list[DeliveryFailed | None] = [self.allowed(d) for d in deliveries]
        try:
            producer = self.producer
        except Exception as e:  # no broker reachable: the whole batch waits for a retry
            log.warning("no Kafka producer for reply topics: %r", e)
            return [o or DeliveryFailed("broker_unavailable", retryable=True) for o in out]
        futures: list[Any] = [None] * len(deliveries)
        # a send to a topic the producer has no metadata for waits up to the send timeout for it
        # (a topic that does not exist, on a broker that does not create topics): the known
        # topics go first, and once the batch has spent its send timeout no unknown one is tried
        known = {d.target: _has_metadata(producer, d.target) for d in deliveries}
        spent_by = time.monotonic() + self._s.delivery_send_timeout_s
        stalled: set[str] = set()
        for i in sorted(range(len(deliveries)), key=lambda i: not known[deliveries[i].target]):
            d = deliveries[i]
            if out[i] is not None:
                continue
            if d.target in stalled or (not known[d.target] and time.monotonic() >= spent_by):
                out[i] = DeliveryFailed("timeout", retryable=True)
                continue
            headers = [("traceparent", traceparent(d.trace_id))] if d.trace_id else None
            try:
                futures[i] = producer.send(d.target, key=d.request_id.encode(), value=d.body, headers=headers)
            except KafkaTimeoutError as e:
                out[i] = failure(e)
                stalled.add(d.target)
            except Exception as e:
                out[i] = failure(e)
        try:
            producer.flush(timeout=self._s.delivery_send_timeout_s)
        except Exception as e:  # the futures still say which records made it
            log.debug("flush of reply records did not finish: %r", e)
        for i, f in enumerate(futures):
            if f is None:
                continue
            if not f.is_done:
                out[i] = DeliveryFailed("timeout", retryable=True)
            elif f.failed():
                out[i] = failure(f.exception)
        return out

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:
                log.warning("could not close the reply-topic producer", exc_info=True)
