"""Every Redis key, Kafka topic and Celery queue name, defined in one place.

Redis layout (``<p>`` is ``INFERQ_KEY_PREFIX``):

- ``<p>:result:<request_id>`` — hash: ``status`` (queued|running|done|failed|expired|cancelled), ``body``
  (the :class:`schemas.messages.InferenceResult` JSON) and ``digest`` (payload digest, to tell a
  duplicate delivery from a conflicting reuse of an id). Expires after ``INFERQ_RESULT_TTL_S``.
- ``<p>:worker:<hostname>`` — string, the models a ready worker serves; expires unless refreshed.
- ``<p>:inflight`` and ``<p>:inflight:<model>`` — integers: requests admitted (queued or running)
  and not yet terminal, in all and per model; the store's scripts count them up on admission and
  down on the terminal transition. The intake's backpressure reads the per-model ones.
- ``<p>:result:<id>`` also holds ``attempts``: how many times a worker started the request, and
  ``stop`` once a client cancelled a running generation (the worker ends it at its next sync).
- ``<p>:deadlines`` — sorted set: admitted request ids by deadline (epoch ms); a sweeper in every
  worker ends the ones still ``queued`` past it as ``expired``, wherever their message waits.
- ``<p>:pending`` — sorted set: queued request ids by admission time; while a request is queued its
  hash also holds ``handoff`` (Celery queue, priority, message item). Workers send again the ones
  still queued ``INFERQ_REQUEUE_QUEUED_AFTER_S`` after admission (a message lost with a worker).
- ``<p>:owners`` — hash: Celery delivery tag → worker instance holding that message; the live
  workers put back (from kombu's ``unacked`` hash) the messages of an instance that died.
- ``<p>:instance:<token>`` — string, one per live worker process; expires unless refreshed.
- ``<p>:node:<hostname>`` — string, the instance token a Celery node name last ran as.
- ``<p>:done`` — pub/sub channel: each request id as its result becomes terminal, so clients can
  block instead of polling (the hash stays the source of truth; a missed message costs a poll).

Kafka topics (``<t>`` is ``INFERQ_TOPIC_PREFIX``): ``<t>.requests``, ``<t>.deadletter`` and ``<t>.stream``
(generated text chunks, key = request id).
Celery queues: ``<p>.model.<model>``, one per model.

Elasticsearch (logs): writes go to ``<p>-logs`` — a data stream with an ILM policy of the same name
on a real cluster, else a rollover alias over ``<p>-logs-000001``…; the index template is
``<p>-logs``. Local folders under ``INFERQ_STATE_DIR``: ``spool/`` (logs waiting for Elasticsearch)
and ``metrics/`` (prometheus-client's multi-process files).
"""

from __future__ import annotations

import re
from pathlib import Path

from schemas.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def result_key(settings: Settings, request_id: str) -> str:
    return f"{settings.key_prefix}:result:{request_id}"


def done_channel(settings: Settings) -> str:
    return f"{settings.key_prefix}:done"


def inflight_key(settings: Settings, model: str | None = None) -> str:
    """Counter: requests admitted and not yet terminal (kept by the store's scripts), per model."""
    return f"{settings.key_prefix}:inflight" + (f":{model}" if model is not None else "")


def worker_key(settings: Settings, hostname: str) -> str:
    return f"{settings.key_prefix}:worker:{hostname}"


def deadlines_key(settings: Settings) -> str:
    """Sorted set: request id by deadline (epoch ms), for requests admitted with a deadline."""
    return f"{settings.key_prefix}:deadlines"


def pending_key(settings: Settings) -> str:
    """Sorted set: queued request ids by admission time (epoch ms); their hand-off is kept in the
    result hash until they start, so a Celery message lost with a worker can be sent again."""
    return f"{settings.key_prefix}:pending"


def doorbell_key(settings: Settings, partition: int) -> str:
    """List of at most one element per partition of the requests topic: rung by producers once the
    broker has their record there, popped by the idle intake that owns it (:mod:`workers.doorbell`)."""
    return f"{settings.key_prefix}:intake:doorbell:{partition}"


def owners_key(settings: Settings) -> str:
    """Hash: Celery delivery tag → instance token of the worker process running that message."""
    return f"{settings.key_prefix}:owners"


def instance_key(settings: Settings, token: str) -> str:
    """One live worker process (refreshed by its heartbeat; gone = the process died)."""
    return f"{settings.key_prefix}:instance:{token}"


def node_key(settings: Settings, hostname: str) -> str:
    """The instance token a Celery node name last ran as (a restart under the same name)."""
    return f"{settings.key_prefix}:node:{hostname}"


def worker_key_pattern(settings: Settings) -> str:
    return f"{settings.key_prefix}:worker:*"


def requests_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.requests"


def deadletter_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.deadletter"


def stream_topic(settings: Settings) -> str:
    """generate: chunks of text as they are produced, for requests with ``stream_to_kafka``."""
    return f"{settings.topic_prefix}.stream"


def log_index(settings: Settings) -> str:
    """Where log records are written: the data stream or the write alias."""
    return f"{settings.key_prefix}-logs"


def spool_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / "spool"


def metrics_dir(settings: Settings) -> Path:
    return Path(settings.state_dir) / "metrics"


def model_queue(settings: Settings, model: str) -> str:
    """The Celery queue that carries one model's work; unsafe characters become ``_``."""
    return f"{settings.key_prefix}.model.{_UNSAFE.sub('_', model)}"


def unseen_key(settings: Settings) -> str:
    """Sorted set: result keys of requests the API admitted and published that no intake has read
    yet, by admission time (epoch ms); their wire JSON is in :func:`unseen_wire_key`."""
    return f"{settings.key_prefix}:unseen"


def unseen_wire_key(settings: Settings) -> str:
    """Hash: result key → the wire JSON the API published for it (republished if the broker lost it)."""
    return f"{settings.key_prefix}:unseen:wire"


# a Kafka record header the API puts on requests it admitted before publishing: the intake marks
# them read (so the republish sweep leaves them alone); other records cost the intake nothing
ADMITTED_HEADER = "inferq-admitted"
