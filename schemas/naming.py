"""Every Redis key, Kafka topic and Celery queue name, defined in one place.

Every key, set member and ``done`` message of a request uses its *scoped id*
(:func:`scoped_id`: ``<tenant>~<request_id>``, or the bare id without a tenant), so the same id
sent by two tenants is two independent requests and no tenant can read, take or probe another's.

What each key holds, its Redis type and how long it lives are in :data:`REDIS_KEYS` (topics, queues,
the log index and local folders in :data:`OTHER_NAMES`) at the end of this module, next to the
builders they describe: ``python -m ops.reference`` renders both as ``docs/redis-keys.md``, and
``tests/unit/ops/test_reference.py`` fails when that file drifts or a key builder is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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
    """Pub/sub channel announcing results that became terminal (see :func:`done_ids`)."""
    return f"{settings.key_prefix}:done"


DONE_SEP = " "  # in neither a tenant name, a request id nor SCOPE_SEP: a batch splits unambiguously
DONE_MAX_IDS = 10_000  # ids read from one message at most: a writer announces a batch (<= 64 or so)


def done_ids(data: bytes | str) -> list[str]:
    """The scoped ids one ``done`` message announces.

    A message is one batch's scoped ids joined by :data:`DONE_SEP` (one script run publishes
    once); a writer from before batching published one id per message, which is the same format
    with one id, so readers accept both during a rolling upgrade. The message is data from Redis,
    not trusted input: undecodable bytes are replaced, empty parts dropped and at most
    :data:`DONE_MAX_IDS` read, so a malformed one costs a bounded parse (an id nobody waits for
    is ignored by every reader), never an exception.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else str(data)
    return [sid for sid in text.split(DONE_SEP, DONE_MAX_IDS)[:DONE_MAX_IDS] if sid]


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


def version_queue(settings: Settings, model: str, version: str) -> str:
    """The Celery queue of one version of a model (:mod:`schemas.versions`); unsafe characters
    become ``_``."""
    return f"{model_queue(settings, model)}.v.{_UNSAFE.sub('_', version)}"


def rollout_key(settings: Settings, model: str) -> str:
    """Hash: how a model's unpinned requests are routed (:class:`schemas.versions.Rollout`)."""
    return f"{settings.key_prefix}:rollout:{model}"


def version_stats_key(settings: Settings, model: str, minute: int) -> str:
    """Hash: a model's results in one minute (epoch minutes), by version (:mod:`workers.store.versions`)."""
    return f"{settings.key_prefix}:version-stats:{model}:{minute}"


def unseen_key(settings: Settings) -> str:
    """Sorted set: result keys of requests the API admitted and published that no intake has read
    yet, by admission time (epoch ms); their wire JSON is in :func:`unseen_wire_key`."""
    return f"{settings.key_prefix}:unseen"


def unseen_wire_key(settings: Settings) -> str:
    """Hash: result key → the wire JSON the API published for it (republished if the broker lost it)."""
    return f"{settings.key_prefix}:unseen:wire"


def outbox_key(settings: Settings) -> str:
    """Stream: one entry (field ``id`` = scoped id) per terminal result that has delivery targets,
    added by the script that made it terminal; the delivery service reads it with a consumer group
    (:data:`OUTBOX_GROUP`) and deletes each entry once delivered or given up."""
    return f"{settings.key_prefix}:outbox"


def outbox_refused_key(settings: Settings) -> str:
    """Counter: terminal results not put in the outbox because it held ``outbox_max_entries``."""
    return f"{settings.key_prefix}:outbox:refused"


def delivery_key(settings: Settings, consumer: str) -> str:
    """String: when a live delivery process (its consumer name) last went round its loop (epoch s)."""
    return f"{settings.key_prefix}:delivery:{consumer}"


OUTBOX_GROUP = "inferq-delivery"  # the delivery service's consumer group on the outbox stream


def cache_key(settings: Settings, scope: str, digest: str) -> str:
    """One cached model output, in the cache's own Redis (``INFERQ_CACHE_REDIS_URL``, never the
    result store's): ``scope`` is ``t:<tenant>`` (``t:`` without one) or ``shared``; ``digest`` the
    hex digest of the model version, task, output-changing parameters and input text."""
    return f"{settings.key_prefix}:cache:{scope}:{digest}"


# a Kafka record header the API puts on requests it admitted before publishing: the intake marks
# them read (so the republish sweep leaves them alone); other records cost the intake nothing
ADMITTED_HEADER = "inferq-admitted"


@dataclass(frozen=True)
class NameDoc:
    """One key (or topic, queue, folder) family, as the generated reference shows it.

    The pattern is the builder's own output for placeholder arguments, so the reference cannot
    disagree with the code; ``part`` picks one name of a builder that returns several."""

    builder: Callable[..., str | list[str] | Path]
    args: tuple[str, ...]
    kind: str
    holds: str
    lifetime: str = ""
    part: int | None = None


_RESULT_TTL = "`INFERQ_RESULT_TTL_S` after its last write"

REDIS_KEYS: tuple[NameDoc, ...] = (
    NameDoc(
        result_key,
        ("<scoped id>",),
        "hash",
        "`status` (queued, running, done, failed, expired, cancelled); `body`, the `InferenceResult` JSON; "
        "`digest`, the request's content digest (a duplicate delivery from a conflicting reuse of an id); "
        "`attempts`, how many times a worker started it; while queued `handoff` (Celery queue, priority, "
        "message item), so a lost message can be sent again; `route`, the model version routing chose at "
        "admission (empty = the model's default queue); `stop` once a client cancelled a running "
        "generation (the worker ends it at its next sync); `deliver`, where the terminal result is also "
        'sent (compact JSON `{"topics": [...], "url": ...}`, absent = nowhere)',
        _RESULT_TTL,
    ),
    NameDoc(
        done_channel,
        (),
        "pub/sub channel",
        "the scoped ids of results as they become terminal, one message per batch (ids joined by a "
        "space; an older writer's message holds one id, the same format), so clients block instead "
        "of polling (the hash stays the source of truth; a missed message costs a poll)",
        "(a channel: nothing is stored)",
    ),
    NameDoc(
        inflight_key,
        (),
        "sorted set",
        "scoped ids admitted (queued or running) and not yet terminal, scored by when their result hash "
        "expires (epoch ms): count with `ZCOUNT key <now ms> +inf`. A terminal transition removes the id; "
        "one whose result expired while queued stops counting by its score",
        _RESULT_TTL,
    ),
    NameDoc(
        inflight_key,
        ("<model>",),
        "sorted set",
        "the same, per model: the intake's backpressure reads it",
        _RESULT_TTL,
    ),
    NameDoc(
        tenant_keys,
        ("<tenant>",),
        "sorted set",
        'the same, per tenant (tenant-less requests are tenant `""`), for `INFERQ_TENANT_MAX_INFLIGHT`',
        _RESULT_TTL,
        part=0,
    ),
    NameDoc(
        tenant_keys,
        ("<tenant>",),
        "sorted set",
        "a tenant's stored results, scoped id by expiry (epoch ms), kept while it has a byte limit "
        "(`INFERQ_TENANT_MAX_RESULT_BYTES`)",
        _RESULT_TTL,
        part=1,
    ),
    NameDoc(
        tenant_keys,
        ("<tenant>",),
        "hash",
        "scoped id → bytes of its stored result; `~total` = their sum",
        _RESULT_TTL,
        part=2,
    ),
    NameDoc(
        presence_key,
        (),
        "sorted set",
        "`<model>|<hostname>` by when that worker's advertisement lapses (epoch ms): which models a live "
        "worker serves, read by the intake and the requeue sweep (`INFERQ_UNSERVED_MODEL_GRACE_S`)",
        "none; lapsed members older than the grace are removed",
    ),
    NameDoc(
        worker_key,
        ("<hostname>",),
        "string",
        "the models a live, warmed-up worker serves",
        "15 s, refreshed by each heartbeat",
    ),
    NameDoc(
        deadlines_key,
        (),
        "sorted set",
        "admitted scoped ids by deadline (epoch ms); a sweeper in every worker ends the ones still "
        "`queued` past it as `expired`, wherever their message waits",
        "none; members leave when their request ends",
    ),
    NameDoc(
        pending_key,
        (),
        "sorted set",
        "queued scoped ids by admission time (epoch ms); workers send again the ones still queued "
        "`INFERQ_REQUEUE_QUEUED_AFTER_S` after admission (a message lost with a worker)",
        "none; members leave when their request starts",
    ),
    NameDoc(
        doorbell_key,
        ("<partition>",),
        "list",
        "at most one element: rung by `InferqClient` once the broker has a record in that partition of "
        "the requests topic, popped by the idle intake that owns it",
        "none; popped when rung",
    ),
    NameDoc(
        owners_key,
        (),
        "hash",
        "Celery delivery tag → instance token of the worker process running that message; live workers "
        "put back (from kombu's `unacked` hash) the messages of an instance that died",
        "none; a field leaves when its task finishes or the message is put back",
    ),
    NameDoc(
        instance_key,
        ("<token>",),
        "string",
        "one live worker process (its hostname); gone = the process died",
        "15 s, refreshed by each heartbeat",
    ),
    NameDoc(
        node_key,
        ("<hostname>",),
        "string",
        "the instance token a Celery node name last ran as, so a worker restarting under the same name "
        "releases its predecessor's messages at once",
        "none",
    ),
    NameDoc(
        outbox_key,
        (),
        "stream",
        "one entry (`id` = scoped id) per terminal result with delivery targets (the result hash's "
        "`deliver` field: a `reply_topic`, `INFERQ_RESULTS_TOPIC`, a `callback_url`), added by the same "
        "script that made it terminal; read by `inferq-delivery` (consumer group `inferq-delivery`), "
        "deleted once delivered or given up; at most `INFERQ_OUTBOX_MAX_ENTRIES` entries",
        "none; entries leave when delivered or given up",
    ),
    NameDoc(
        outbox_refused_key,
        (),
        "string",
        "how many terminal results were not put in the outbox because it was full",
        "none",
    ),
    NameDoc(
        delivery_key,
        ("<consumer>",),
        "string",
        "when that delivery process last went round its loop (epoch s): `inferq-ops status` reads it",
        "15 s, refreshed every 2 s",
    ),
    NameDoc(
        unseen_key,
        (),
        "sorted set",
        "result keys of requests `POST /v1/requests` admitted and published that no intake has read yet, "
        "by admission time (epoch ms)",
        "none; members leave when an intake reads the record",
    ),
    NameDoc(
        unseen_wire_key,
        (),
        "hash",
        "result key → the wire JSON the API published, sent again after `INFERQ_REPUBLISH_UNSEEN_AFTER_S` "
        "if the broker lost the record",
        "none; fields leave with their `unseen` member",
    ),
    NameDoc(
        rollout_key,
        ("<model>",),
        "hash",
        "how the model's unpinned requests are routed: `current` (its version; empty = the default "
        "queue), `canary` and `canary_share_bp` (basis points of request ids, by hash), `salt` (keys that "
        "hash: new for each canary), `previous` (where a rollback goes after a promotion); written "
        "by `inferq-ops rollout`, read by intakes "
        "(at most once a second)",
        "none",
    ),
    NameDoc(
        version_stats_key,
        ("<model>", "<epoch minute>"),
        "hash",
        "results written in that minute by version: `<version>|ok`, `<version>|failed`, and "
        "`<version>|le<ms>` latency buckets (for `inferq-ops rollout status` and `watch`)",
        "2 hours",
    ),
    NameDoc(
        cache_key,
        ("<scope>", "<digest>"),
        "string",
        "in the cache instance only (`INFERQ_CACHE_REDIS_URL`): one input's output as the worker wrote "
        "it, keyed by a digest of model version, task, the parameters that change the output and the "
        "text; scope `t:<tenant>` unless `INFERQ_CACHE_SHARED` (then `shared`)",
        "`INFERQ_CACHE_TTL_S`; evicted least recently used past the instance's `maxmemory`",
    ),
)

OTHER_NAMES: tuple[NameDoc, ...] = (
    NameDoc(requests_topic, (), "Kafka topic", "inference requests; key = request id"),
    NameDoc(deadletter_topic, (), "Kafka topic", "records that could not be accepted, as `DeadLetter`"),
    NameDoc(
        stream_topic, (), "Kafka topic", "`generate` with `stream_to_kafka`: text chunks, key = request id"
    ),
    NameDoc(model_queue, ("<model>",), "Celery queue", "one model's work, in the Celery broker's Redis"),
    NameDoc(
        version_queue,
        ("<model>", "<version>"),
        "Celery queue",
        "the work routed to one version of a model (pinned, or by its rollout)",
    ),
    NameDoc(
        log_index,
        (),
        "Elasticsearch index",
        "log records: a data stream with an ILM policy of the same name on a real cluster, else a "
        "rollover alias over `<p>-logs-000001`…; the index template has the same name",
    ),
    NameDoc(spool_dir, (), "folder", "log records waiting for Elasticsearch (under `INFERQ_STATE_DIR`)"),
    NameDoc(metrics_dir, (), "folder", "prometheus-client's multi-process files (under `INFERQ_STATE_DIR`)"),
)
