"""Every Redis key, Kafka topic and Celery queue name, defined in one place.

Redis layout (``<p>`` is ``INFERQ_KEY_PREFIX``):

- ``<p>:result:<request_id>`` — hash: ``status`` (queued|running|done|failed|expired|cancelled), ``body``
  (the :class:`schemas.messages.InferenceResult` JSON) and ``digest`` (payload digest, to tell a
  duplicate delivery from a conflicting reuse of an id). Expires after ``INFERQ_RESULT_TTL_S``.
- ``<p>:worker:<hostname>`` — string, the models a ready worker serves; expires unless refreshed.
- ``<p>:inflight`` — integer: requests admitted (queued or running) and not yet terminal; the
  store's scripts count it up on admission and down on the terminal transition.
- ``<p>:done`` — pub/sub channel: each request id as its result becomes terminal, so clients can
  block instead of polling (the hash stays the source of truth; a missed message costs a poll).

Kafka topics (``<t>`` is ``INFERQ_TOPIC_PREFIX``): ``<t>.requests`` and ``<t>.deadletter``.
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


def inflight_key(settings: Settings) -> str:
    """Counter: requests admitted and not yet terminal (kept by the store's scripts)."""
    return f"{settings.key_prefix}:inflight"


def worker_key(settings: Settings, hostname: str) -> str:
    return f"{settings.key_prefix}:worker:{hostname}"


def worker_key_pattern(settings: Settings) -> str:
    return f"{settings.key_prefix}:worker:*"


def requests_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.requests"


def deadletter_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.deadletter"


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
