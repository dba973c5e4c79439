"""Every Redis key, Kafka topic and Celery queue name, defined in one place.

Redis layout (``<p>`` is ``INFERQ_KEY_PREFIX``):

- ``<p>:result:<request_id>`` — hash: ``status`` (queued|running|done|failed|expired|cancelled), ``body``
  (the :class:`schemas.messages.InferenceResult` JSON) and ``digest`` (payload digest, to tell a
  duplicate delivery from a conflicting reuse of an id). Expires after ``INFERQ_RESULT_TTL_S``.
- ``<p>:worker:<hostname>`` — string, the models a ready worker serves; expires unless refreshed.
- ``<p>:done`` — pub/sub channel: each request id as its result becomes terminal, so clients can
  block instead of polling (the hash stays the source of truth; a missed message costs a poll).

Kafka topics (``<t>`` is ``INFERQ_TOPIC_PREFIX``): ``<t>.requests`` and ``<t>.deadletter``.
Celery queues: ``<p>.model.<model>``, one per model.
"""

from __future__ import annotations

import re

from schemas.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def result_key(settings: Settings, request_id: str) -> str:
    return f"{settings.key_prefix}:result:{request_id}"


def done_channel(settings: Settings) -> str:
    return f"{settings.key_prefix}:done"


def worker_key(settings: Settings, hostname: str) -> str:
    return f"{settings.key_prefix}:worker:{hostname}"


def worker_key_pattern(settings: Settings) -> str:
    return f"{settings.key_prefix}:worker:*"


def requests_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.requests"


def deadletter_topic(settings: Settings) -> str:
    return f"{settings.topic_prefix}.deadletter"


def model_queue(settings: Settings, model: str) -> str:
    """The Celery queue that carries one model's work; unsafe characters become ``_``."""
    return f"{settings.key_prefix}.model.{_UNSAFE.sub('_', model)}"
