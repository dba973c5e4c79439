"""The Celery task that carries requests into a model's engine, and the worker's lifecycle hooks.

One Celery message carries up to ``INFERQ_TRANSPORT_BATCH_SIZE`` requests for one model. The task
hands them to the model's :class:`~workers.core.engine.Engine` and returns once every result is written,
so the late ack means "results are in Redis"; when a result could not be written (Redis gone past
the client's retries) the message is put back on its queue instead.

A worker killed mid-batch (``kill -9``, out of memory) leaves its messages unacked in kombu's
``unacked`` hash, where the Redis transport would leave them for the whole visibility timeout.
Each message is therefore recorded, as it arrives, with the worker process that holds it
(``<p>:owners``), every worker process keeps an instance key alive, and every worker's heartbeat
puts back the messages of instances whose key expired (or that restarted under the same node
name) at once. The store counts starts per request; past ``INFERQ_MAX_ATTEMPTS`` a request is
failed as poison and dead-lettered with its attempt count.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from celery import signals
from celery.exceptions import Reject
from kafka import KafkaProducer
from pydantic import ValidationError

from schemas import results
from schemas.connections import kafka_client_options
from schemas.errors import ErrorCode, InferqError, InvalidRequest, ModelUnavailable
from schemas.messages import (
    ErrorInfo,
    InferenceRequest,
    ResultStatus,
    StreamChunk,
    Timings,
    now_ms,
)
from schemas.naming import instance_key, node_key, owners_key, stream_topic, worker_key
from schemas.observer import Observer
from schemas.settings import get_settings
from schemas.validation import readable_request_id
from workers.core.batcher import BatchPolicy
from workers.core.decoder import Decoder
from workers.core.engine import Engine
from workers.core.jobs import Job
from workers.core.runners import load_runner
from workers.core.runners.causal import CausalLM
from workers.core.sequences import Chunk, DecodePolicy
from workers.core.wait_policy import AdaptiveWait, CostModel, FixedWait, WaitPolicy
from workers.store.presence import ServedModels, advertise, withdraw
from workers.store.store import ResultStore, as_text
from workers.telemetry.logs import configure_logging, stop_logging
from workers.telemetry.observe import Telemetry
from workers.transport import letters
from workers.transport.app import TASK_INFER, app

log = logging.getLogger(__name__)

_engines: dict[str, Engine | Decoder] = {}
_engines_lock = threading.Lock()
_heartbeat_stop = threading.Event()
HEARTBEAT_S = 5.0
DEADLINE_SWEEP_S = 0.25  # how late past its deadline a queued request may still look queued
# this worker process; its key in Redis lives while the process does (3 missed heartbeats)
INSTANCE = secrets.token_hex(8)


@functools.cache
def result_store() -> ResultStore:
    """The process's one result store (one Redis connection pool for engines, failures, heartbeat)."""
    return ResultStore.from_settings(get_settings(), observer())


@functools.cache
def observer() -> Observer:
    """The process's telemetry (metrics and logs), wired into its store and engines."""
    return Telemetry(get_settings())


def engine_for(model: str) -> Engine | Decoder:
    """The process's engine for ``model``, loaded on first use: the dynamic batcher for encoders,
    the continuous-batching decoder for causal LMs."""
    with _engines_lock:
        if model not in _engines:
            _engines[model] = _new_engine(model)
        return _engines[model]


def _new_engine(model: str) -> Engine | Decoder:
    s = get_settings()
    runner = load_runner(model, s)
    if isinstance(runner, CausalLM):
        policy = DecodePolicy(
            s.generate_max_running,
            s.generate_max_batch_tokens,
            s.generate_max_new_tokens,
            s.generate_max_prompt_tokens,
            s.generate_stream_interval_ms,
            static=s.generate_batching == "static",
        )
        decoder = Decoder(runner, result_store(), policy, s.max_attempts, observer=observer())
        decoder.reject_hooks.append(dead_letter_job)
        decoder.chunk_hooks.append(publish_chunk)
        return decoder
    batch = BatchPolicy(s.max_batch_size, s.max_batch_tokens, s.max_wait_ms, s.priority_aging_ms)
    cost = CostModel()
    wait: WaitPolicy = (
        AdaptiveWait(cost, s.target_latency_ms, s.max_wait_ms)
        if s.batch_wait == "adaptive"
        else FixedWait(s.max_wait_ms)
    )
    engine = Engine(runner, result_store(), batch, wait, cost, s.max_attempts, observer())
    engine.poison_hooks.append(dead_letter_job)
    return engine


@app.task(name=TASK_INFER, bind=True, acks_late=True)
def infer(self: Any, items: list[dict[str, Any]]) -> dict[str, int]:
    """Run a list of ``{"request": ..., "timings": ...}``; returns counts by status."""
    by_model: dict[str, list[tuple[InferenceRequest, dict[str, Any]]]] = {}
    sources: dict[str, list[dict[str, Any] | None]] = {}
    counts = Counter[str]()
    # kombu marks a message it puts back (its worker died, or it was rejected) as redelivered
    first = not (self.request.delivery_info or {}).get("redelivered", False)
    for item in items if isinstance(items, list) else [items]:
        try:
            request = InferenceRequest.model_validate(item["request"])
            timings = item.get("timings") or {}
            if not isinstance(timings, dict):
                raise TypeError(f"timings is a {type(timings).__name__}")
        except Exception as e:  # e.g. sent by a newer intake: answer it, keep the others going
            counts[ResultStatus.FAILED.value] += _unreadable(item, e)
            continue
        by_model.setdefault(request.model, []).append((request, timings))
        sources.setdefault(request.model, []).append(item.get("source"))
    jobs: list[Job] = []
    for model, reqs in by_model.items():
        try:
            engine = engine_for(model)
        except InferqError as e:  # this worker cannot serve the model: answer, don't retry forever
            log.error("cannot serve %s: %s", model, e)
            _fail(reqs, e)
            counts[ResultStatus.FAILED.value] += len(reqs)
            continue
        if isinstance(engine, Engine):
            jobs += engine.submit(reqs, sources[model], first_delivery=first)
        else:  # the decoder marks joiners before their prefill, which is short next to decoding
            jobs += engine.submit(reqs, sources[model])
    timeout_s = get_settings().celery_visibility_timeout_s
    for job in jobs:
        if not job.done.wait(timeout_s):
            raise TimeoutError(f"request {job.request.request_id} not finished after {timeout_s} s")
    unwritten = sum(job.unwritten for job in jobs)
    if unwritten:  # the store was unreachable: run this message again later (results are idempotent)
        raise Reject(f"{unwritten} results could not be written to Redis", requeue=True)
    counts.update("skipped" if job.skipped else job.status.value for job in jobs)
    return dict(counts)


def _unreadable(item: Any, error: Exception) -> int:
    """Fail and dead-letter an item this worker cannot read (a field it does not know: an intake
    newer than the worker, mid-upgrade; or anything else malformed); returns 1 when a result
    could be written (its id was readable). Never raises: the message's other items go on."""
    found = item.get("request") if isinstance(item, dict) else None
    raw: dict[str, Any] = found if isinstance(found, dict) else {}
    rid = readable_request_id(raw)
    log.error("cannot read request %s from its Celery message: %r", rid, error)
    if isinstance(error, ValidationError):
        info = InvalidRequest(
            f"this worker cannot read the request: {error.errors()[0]['msg']}",
            hint="upgrade the workers to the intake's version, then send the request again with a new id",
        ).info()
    else:
        info = InferqError(  # code internal_error
            f"this worker cannot read the request ({type(error).__name__})",
            detail={"exception": type(error).__name__},
        ).info()
    _dead_letter_item(item, rid, info)
    if rid is None:
        return 0
    try:
        timings = Timings(**{**(item.get("timings") or {}), "done_ms": now_ms()})
    except Exception:
        timings = Timings(done_ms=now_ms())
    failed = results.salvaged_result(
        rid, info, timings, tenant=raw.get("tenant"), task=raw.get("task"), model=raw.get("model")
    )
    result_store().advance([failed])
    return 1


def _dead_letter_item(item: Any, rid: str | None, error: ErrorInfo) -> None:
    """Publish an unreadable Celery item to the dead-letter topic (best effort: logged if not)."""
    try:
        source = item.get("source") if isinstance(item, dict) else None
        src: dict[str, Any] = source if isinstance(source, dict) else {}
        letter = results.dead_letter(
            get_settings(),
            error,
            json.dumps(item, default=repr),
            source_topic=str(src.get("topic", "")),
            source_partition=src["partition"] if isinstance(src.get("partition"), int) else -1,
            source_offset=src["offset"] if isinstance(src.get("offset"), int) else -1,
            key=rid.encode() if rid else None,
            request_id=rid,
        )
        letters.send(_producer(), get_settings(), letter)
    except Exception:
        log.exception("could not dead-letter an unreadable item of request %s", rid)


def _fail(reqs: list[tuple[InferenceRequest, dict[str, Any]]], error: InferqError) -> None:
    result_store().advance(
        results.result(r, ResultStatus.FAILED, {**t, "done_ms": now_ms()}, error) for r, t in reqs
    )


@functools.cache
def _producer() -> KafkaProducer:
    """The process's Kafka producer (dead letters, generation stream chunks)."""
    s = get_settings()
    return KafkaProducer(
        **kafka_client_options(s),
        acks="all",
        retries=10,
        linger_ms=5,
        max_request_size=s.kafka_max_request_bytes,
    )


def publish_chunk(chunk: Chunk) -> None:
    """The decoder's chunk hook: new text of a ``stream_to_kafka`` request, keyed by request id."""
    message = StreamChunk(
        request_id=chunk.request_id,
        index=chunk.index,
        text=chunk.text,
        tokens=chunk.tokens,
        finish_reason=chunk.finish_reason,
    )
    _producer().send(
        stream_topic(get_settings()), key=chunk.request_id.encode(), value=message.model_dump_json().encode()
    )


def dead_letter_job(job: Job) -> None:
    """Engines' reject hook: publish a request the worker refused (failed as poison after its
    attempts, or invalid in a way only the model can tell) to the dead-letter topic."""
    s, req, src = get_settings(), job.request, job.source or {}
    error = job.error.info() if job.error else None
    try:
        poison = error is not None and error.code is ErrorCode.POISON_MESSAGE
        built = results.dead_letter(
            s,
            error or InferqError("rejected without an error").info(),
            req.wire_json(),
            source_topic=src.get("topic", ""),
            source_partition=src.get("partition", -1),
            source_offset=src.get("offset", -1),
            key=req.request_id.encode(),
            request_id=req.request_id,
            attempts=job.attempts - 1 if poison else max(1, job.attempts),
        )
        letter = built.letter
        letters.send(_producer(), s, built)
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


_tags: dict[str, str] = {}  # task id → kombu delivery tag, for the messages this process holds


@signals.task_received.connect
def _own(request: Any = None, **kw: Any) -> None:
    """Record that this process holds the message (on arrival, prefetched ones included), so it is
    put back at once if the process dies. Celery hides the delivery tag from tasks; the received
    request still carries the kombu message."""
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    if tag:
        _tags[request.id] = tag
        result_store().client.hset(owners_key(get_settings()), tag, INSTANCE)


@signals.task_postrun.connect
def _release(task_id: str | None = None, **kw: Any) -> None:
    tag = _tags.pop(task_id, None) if task_id else None
    if tag:
        result_store().client.hdel(owners_key(get_settings()), tag)


ORPHAN_AFTER_S = 30.0  # an unacked message nobody owns for this long was lost with its worker


def reap_dead_owners() -> int:
    """Put back on their queues the messages held by worker processes that died; returns how many.

    Two kinds: those recorded with an instance whose key is gone, and those no live worker has
    recorded for ``ORPHAN_AFTER_S`` (a worker killed between taking a message from Redis and
    recording it). kombu's restore (a WATCH transaction on the unacked hash) makes two workers
    reaping at once restore each message once; restoring one that was in fact finished only
    reruns requests the store already ended, which it refuses.
    """
    s, client = get_settings(), result_store().client
    owners = {as_text(k): as_text(v) for k, v in client.hgetall(owners_key(s)).items()}
    tokens = sorted(set(owners.values()))
    pipe = client.pipeline(transaction=False)
    for token in tokens:
        pipe.exists(instance_key(s, token))
    alive = {t for t, up in zip(tokens, pipe.execute(), strict=True) if up} if tokens else set()
    dead = [tag for tag, token in owners.items() if token not in alive]
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        qos = channel.qos
        old = channel.client.zrangebyscore(qos.unacked_index_key, "-inf", time.time() - ORPHAN_AFTER_S)
        orphans = [tag for tag in map(as_text, old) if tag not in owners]
        for tag in dead + orphans:
            qos.restore_by_tag(tag, leftmost=True)
            client.hdel(owners_key(s), tag)
    if dead or orphans:
        log.warning("put back %d messages of dead workers and %d unowned ones", len(dead), len(orphans))
    return len(dead) + len(orphans)


@functools.cache
def served_models() -> ServedModels:
    return ServedModels(result_store().client, get_settings())


def requeue_stale(
    store: ResultStore,
    served: ServedModels,
    older_than_s: float,
    send: Callable[[dict[str, Any]], None],
    reject: Callable[[Job], None] | None = None,
) -> Counter[str]:
    """Send again the requests still queued ``older_than_s`` after admission; counts by outcome.

    kombu's Redis transport takes a message off its queue and records it as unacked in two steps;
    a worker killed between them loses the message, and its requests would wait forever. The store
    keeps each queued request's hand-off until it starts; every worker claims the stale ones (each
    one by one worker per period) and sends them again (``send(handoff)``). A duplicate is
    harmless: results only move forward and are written once. Nothing is sent into a queue no live
    worker reads: a request for a model nobody serves is failed ``model_unavailable`` once the model
    is past its grace (:mod:`workers.store.presence`), and dead-lettered (``reject``) by the worker whose
    write ended it; within the grace it is left queued (claimed again next period).
    """
    counts = Counter[str]()
    failed: list[Job] = []
    live, available = served.served(), served.available()
    for h in store.claim_stale(older_than_s):
        raw = h["item"]["request"]
        model = raw.get("model")
        if model in live:
            send(h)
            counts["requeued"] += 1
        elif model in available:
            counts["waiting"] += 1
        else:
            try:
                request = InferenceRequest.model_validate(raw)
            except ValidationError:  # unreadable: a worker answers it when it reads the message
                send(h)
                counts["requeued"] += 1
                continue
            job = Job(request, {**h["item"].get("timings", {}), "done_ms": now_ms()}, [], 0)
            job.status, job.source = ResultStatus.FAILED, h["item"].get("source")
            job.error = ModelUnavailable(f"no live worker has served model {model!r} for a while")
            failed.append(job)
    written = store.advance(results.result(j.request, j.status, j.timings, j.error) for j in failed)
    for job in (j for j, ok in zip(failed, written, strict=True) if ok):
        counts["unavailable"] += 1
        if reject is not None:
            reject(job)
    return counts


def _requeue_stale() -> None:
    s = get_settings()

    def send(h: dict[str, Any]) -> None:
        app.send_task(TASK_INFER, args=[[h["item"]]], queue=h["queue"], priority=h["priority"])

    counts = requeue_stale(result_store(), served_models(), s.requeue_queued_after_s, send, dead_letter_job)
    if counts["requeued"]:
        observer().redelivered("requeued", counts["requeued"])
        log.warning(
            "sent %d requests again: still queued %.0f s after admission",
            counts["requeued"],
            s.requeue_queued_after_s,
        )
    if counts["unavailable"]:
        log.warning("failed %d queued requests: no live worker serves their model", counts["unavailable"])


def _heartbeat(hostname: str, models: list[str]) -> None:
    """Advertise this worker and its models in Redis while it lives (ops and the exporter read it),
    and put back the messages of workers that died."""
    store = result_store()
    s = get_settings()
    key = worker_key(s, hostname)
    while True:
        try:
            store.client.set(key, ",".join(models), ex=int(HEARTBEAT_S * 3))
            advertise(store.client, s, hostname, models, HEARTBEAT_S * 3)
            store.client.set(instance_key(s, INSTANCE), hostname, ex=int(HEARTBEAT_S * 3))
            reap_dead_owners()
            _requeue_stale()
        except Exception:
            log.warning("heartbeat to Redis failed; retrying", exc_info=True)
        if _heartbeat_stop.wait(HEARTBEAT_S):
            store.client.delete(key)
            withdraw(store.client, s, hostname, models)
            store.client.delete(instance_key(s, INSTANCE))
            return


def _sweep_deadlines() -> None:
    """End queued requests whose deadline passed, wherever their message waits (every worker runs
    this; the store's script makes each expiry happen once)."""
    store = result_store()
    while not _heartbeat_stop.wait(DEADLINE_SWEEP_S):
        try:
            store.expire_due()
        except Exception:
            log.warning("deadline sweep failed; retrying", exc_info=True)


@signals.worker_init.connect
def _claim_instance(sender: Any = None, **kw: Any) -> None:
    """Go live as a new instance before taking messages; a previous run under this node name is dead."""
    s, client = get_settings(), result_store().client
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    client.set(instance_key(s, INSTANCE), hostname, ex=int(HEARTBEAT_S * 3))
    previous = client.getset(node_key(s, hostname), INSTANCE)
    if previous and as_text(previous) != INSTANCE:
        client.delete(instance_key(s, as_text(previous)))  # its messages are put back by the next reap


@signals.setup_logging.connect
def _setup_logging(**kw: Any) -> None:
    """ECS JSON logs (stderr + Elasticsearch) instead of Celery's own format."""
    configure_logging(get_settings(), "worker")


@signals.worker_ready.connect
def _warm_up(sender: Any = None, **kw: Any) -> None:
    """Load every declared model before the worker is advertised as ready."""
    models = get_settings().model_names()
    for model in models:
        engine_for(model).warm_up()  # one real pass: the first request pays no lazy initialisation
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(target=_heartbeat, args=(hostname, models), daemon=True, name="heartbeat").start()
    threading.Thread(target=_sweep_deadlines, daemon=True, name="deadlines").start()
    log.info("worker %s ready: %s", hostname, ", ".join(models))


@signals.worker_shutdown.connect
def _drain(**kw: Any) -> None:
    """Finish waiting batches before the process exits."""
    _heartbeat_stop.set()
    for engine in list(_engines.values()):
        engine.close()
    stop_logging()


__all__ = ["engine_for", "infer"]
