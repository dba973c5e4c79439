"""Every Redis key, Kafka topic and Celery queue name, defined in one place.

Redis layout (``<p>`` is ``INFERQ_KEY_PREFIX``):

Every key, set member and ``done`` message of a request uses its *scoped id*
(:func:`scoped_id`: ``<tenant>~<request_id>``, or the bare id without a tenant), so the same id
sent by two tenants is two independent requests and no tenant can read, take or probe another's.

- ``<p>:result:<scoped id>`` — hash: ``status`` (queued|running|done|failed|expired|cancelled), ``body``
  (the :class:`schemas.messages.InferenceResult` JSON) and ``digest`` (payload digest, to tell a
  duplicate delivery from a conflicting reuse of an id). Expires after ``INFERQ_RESULT_TTL_S``.
- ``<p>:worker:<hostname>`` — string, the models a ready worker serves; expires unless refreshed.
- ``<p>:inflight-ids``, ``<p>:inflight-ids:<model>`` and ``<p>:tenant:<tenant>:inflight`` — sorted
  sets: scoped ids of requests admitted (queued or running) and not yet terminal, in all, per model
  and per tenant, scored by when their result hash expires (epoch ms). A terminal transition removes
  the id; one whose result expired while queued drops out by its score, so no count can leak. The
  intake's backpressure and the tenant limit read them (``ZCOUNT`` of the unexpired).
- ``<p>:tenant:<tenant>:bytes`` (sorted set, scoped id by expiry ms) and ``<p>:tenant:<tenant>:sizes``
  (hash, scoped id → bytes of its stored result, ``_total`` = their sum): the tenant's stored
  result bytes, for ``INFERQ_TENANT_MAX_RESULT_BYTES``. Tenant-less requests are tenant ``""``.
- ``<p>:presence`` — sorted set: ``<model>|<hostname>`` by when that worker's advertisement lapses
  (epoch ms); the intake and the requeue sweep read which models a live worker serves.
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


SCOPE_SEP = "~"  # in neither the tenant-name nor the request-id pattern: the split is unambiguous


def scoped_id(tenant: str | None, request_id: str) -> str:
    """A request's id in the store: ``request_id`` without a tenant, else ``<tenant>~<request_id>``."""
    return request_id if tenant is None else f"{tenant}{SCOPE_SEP}{request_id}"


def unscoped_id(sid: str) -> tuple[str | None, str]:
    """(tenant, request id) of a scoped id (the inverse of :func:`scoped_id`)."""
    tenant, sep, rid = sid.rpartition(SCOPE_SEP)
    return (tenant, rid) if sep else (None, sid)


def result_key(settings: Settings, request_id: str) -> str:
    """The result hash of a request; ``request_id`` is its scoped id (:func:`scoped_id`)."""
    return f"{settings.key_prefix}:result:{request_id}"


def done_channel(settings: Settings) -> str:
    return f"{settings.key_prefix}:done"


def inflight_key(settings: Settings, model: str | None = None) -> str:
    """Sorted set: scoped ids admitted and not yet terminal, by result expiry (ms), in all or per model."""
    return f"{settings.key_prefix}:inflight-ids" + (f":{model}" if model is not None else "")


def tenant_key_prefix(settings: Settings) -> str:
    """Start of a tenant's keys: ``<p>:tenant:<tenant>:`` then ``inflight``, ``bytes`` or ``sizes``."""
    return f"{settings.key_prefix}:tenant:"


def tenant_keys(settings: Settings, tenant: str | None) -> list[str]:
    """A tenant's in-flight set, stored-bytes set and sizes hash (None = the tenant-less bucket)."""
    base = f"{tenant_key_prefix(settings)}{tenant or ''}:"
    return [base + "inflight", base + "bytes", base + "sizes"]


def presence_key(settings: Settings) -> str:
    """Sorted set: ``<model>|<hostname>`` by when that worker's advertisement lapses (epoch ms)."""
    return f"{settings.key_prefix}:presence"


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
    broker has their record there, popped by the idle intake that owns it (:mod:`workers.store.doorbell`)."""
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
