"""What a worker publishes to Kafka: dead letters of the requests it refuses or cannot read, and
the stream chunks of ``stream_to_kafka`` generations. Implements the model loops'
:class:`~workers.core.loop.Outlet`.

Both are best effort: the request's result in Redis is the record, so a letter or a chunk that
cannot be sent is logged, never raised into a model loop or a task.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from kafka import KafkaProducer

from schemas import results
from schemas.connections import kafka_client_options
from schemas.errors import ErrorCode, InferqError
from schemas.messages import ErrorInfo, StreamChunk
from schemas.naming import stream_topic
from schemas.settings import Settings
from workers.core.jobs import Job
from workers.core.loop import Outlet
from workers.core.sequences import Chunk
from workers.transport import letters

log = logging.getLogger(__name__)


class Publisher(Outlet):
    """The worker's Kafka side; its producer is made on first use (a worker that never refuses
    a request nor streams one never connects to Kafka)."""

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    **kafka_client_options(self._s),
                    acks="all",
                    retries=10,
                    linger_ms=5,
                    max_request_size=self._s.kafka_max_request_bytes,
                )
            return self._producer

    def chunk(self, chunk: Chunk) -> None:
        """New text of a ``stream_to_kafka`` request, keyed by request id."""
        message = StreamChunk(
            request_id=chunk.request_id,
            index=chunk.index,
            text=chunk.text,
            tokens=chunk.tokens,
            finish_reason=chunk.finish_reason,
        )
        self.producer.send(
            stream_topic(self._s), key=chunk.request_id.encode(), value=message.model_dump_json().encode()
        )

    def refused(self, job: Job) -> None:
        """Dead-letter a request the worker refused: failed as poison after its attempts, invalid
        in a way only the model can tell, or for a model no live worker serves."""
        req, src = job.request, job.source
        error = job.error.info() if job.error else None
        try:
            poison = error is not None and error.code is ErrorCode.POISON_MESSAGE
            built = results.dead_letter(
                self._s,
                error or InferqError("rejected without an error").info(),
                req.wire_json(),
                source_topic=src.topic if src else "",
                source_partition=src.partition if src else -1,
                source_offset=src.offset if src else -1,
                key=req.request_id.encode(),
                request_id=req.request_id,
                attempts=job.attempts - 1 if poison else max(1, job.attempts),
            )
            letter = built.letter
            letters.send(self.producer, self._s, built)
            log.warning(
                "dead-lettering request %s (%s) after %d attempts",
                req.request_id,
                letter.error.code.value,
                letter.attempts,
                extra={
                    "event.dataset": "inferq.deadletter",
                    "event.action": "dead_letter",
                    "event.outcome": "failure",
                    "inferq.stage": "worker",
                    "inferq.request_id": req.request_id,
                    "inferq.error_code": letter.error.code.value,
                },
            )
        except Exception:  # the failed result is still written; the letter is best effort
            log.exception("could not dead-letter request %s", req.request_id)

    def unreadable(self, raw: Any, request_id: str | None, error: ErrorInfo) -> None:
        """Dead-letter a Celery item this worker cannot read, as it came (its source read from
        its wire form where it can be)."""
        try:
            source = raw.get("source") if isinstance(raw, dict) else None
            src: dict[str, Any] = source if isinstance(source, dict) else {}
            letter = results.dead_letter(
                self._s,
                error,
                json.dumps(raw, default=repr),
                source_topic=str(src.get("topic", "")),
                source_partition=src["partition"] if isinstance(src.get("partition"), int) else -1,
                source_offset=src["offset"] if isinstance(src.get("offset"), int) else -1,
                key=request_id.encode() if request_id else None,
                request_id=request_id,
            )
            letters.send(self.producer, self._s, letter)
        except Exception:
            log.exception("could not dead-letter an unreadable item of request %s", request_id)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is buffered (letters, chunks), then close the producer (at shutdown)."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception:
                log.warning("could not flush the Kafka producer at shutdown", exc_info=True)
