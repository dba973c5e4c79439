"""The Celery task that carries requests into a model's engine, and the worker's lifecycle hooks.

One Celery message carries up to ``INFERQ_TRANSPORT_BATCH_SIZE`` requests for one model. The task
hands them to the model's :class:`~workers.engine.Engine` and returns once every result is written,
so the late ack means "results are in Redis".
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections import Counter
from typing import Any

from celery import signals

from ops.logship.ecs import configure_logging, stop_logging
from ops.observe import observe_store, on_batch
from schemas.errors import InferqError
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, Timings, now_ms
from schemas.naming import worker_key
from schemas.settings import get_settings
from workers.batcher import BatchPolicy
from workers.celery_app import TASK_INFER, app
from workers.engine import Engine
from workers.result_store import ResultStore
from workers.runners import load_runner
from workers.wait_policy import AdaptiveWait, CostModel, FixedWait, WaitPolicy

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_heartbeat_stop = threading.Event()
HEARTBEAT_S = 5.0


@functools.cache
def result_store() -> ResultStore:
    """The process's one result store (one Redis connection pool for engines, failures, heartbeat)."""
    return observe_store(ResultStore.from_settings(get_settings()))


def engine_for(model: str) -> Engine:
    """The process's engine for ``model``, loaded on first use."""
    with _engines_lock:
        if model not in _engines:
            s = get_settings()
            policy = BatchPolicy(s.max_batch_size, s.max_batch_tokens, s.max_wait_ms, s.priority_aging_ms)
            cost = CostModel()
            wait: WaitPolicy = (
                AdaptiveWait(cost, s.target_latency_ms, s.max_wait_ms)
                if s.batch_wait == "adaptive"
                else FixedWait(s.max_wait_ms)
            )
            engine = Engine(load_runner(model, s), result_store(), policy, wait, cost)
            engine.hooks.append(on_batch)
            _engines[model] = engine
        return _engines[model]


@app.task(name=TASK_INFER, bind=True, acks_late=True)
def infer(self: Any, items: list[dict[str, Any]]) -> dict[str, int]:
    """Run a list of ``{"request": ..., "timings": ...}``; returns counts by status."""
    by_model: dict[str, list[tuple[InferenceRequest, dict[str, Any]]]] = {}
    for item in items:
        request = InferenceRequest.model_validate(item["request"])
        by_model.setdefault(request.model, []).append((request, item.get("timings", {})))
    jobs, counts = [], Counter[str]()
    for model, reqs in by_model.items():
        try:
            engine = engine_for(model)
        except InferqError as e:  # this worker cannot serve the model: answer, don't retry forever
            log.error("cannot serve %s: %s", model, e)
            _fail(reqs, e)
            counts[ResultStatus.FAILED.value] += len(reqs)
            continue
        jobs += engine.submit(reqs)
    timeout_s = get_settings().celery_visibility_timeout_s
    for job in jobs:
        if not job.done.wait(timeout_s):
            raise TimeoutError(f"request {job.request.request_id} not finished after {timeout_s} s")
    counts.update("skipped" if job.skipped else job.status.value for job in jobs)
    return dict(counts)


def _fail(reqs: list[tuple[InferenceRequest, dict[str, Any]]], error: InferqError) -> None:
    result_store().advance(
        InferenceResult(
            request_id=r.request_id,
            status=ResultStatus.FAILED,
            task=r.task,
            model=r.model,
            tenant=r.tenant,
            error=error.info(),
            timings=Timings(**{**t, "done_ms": now_ms()}),
        )
        for r, t in reqs
    )


def _heartbeat(hostname: str, models: list[str]) -> None:
    """Advertise this worker and its models in Redis while it lives (ops and the exporter read it)."""
    store = result_store()
    key = worker_key(get_settings(), hostname)
    while True:
        try:
            store.client.set(key, ",".join(models), ex=int(HEARTBEAT_S * 3))
        except Exception:
            log.warning("heartbeat to Redis failed; retrying", exc_info=True)
        if _heartbeat_stop.wait(HEARTBEAT_S):
            store.client.delete(key)
            return


@signals.setup_logging.connect
def _setup_logging(**kw: Any) -> None:
    """ECS JSON logs (stderr + Elasticsearch) instead of Celery's own format."""
    configure_logging(get_settings(), "worker")


@signals.worker_ready.connect
def _warm_up(sender: Any = None, **kw: Any) -> None:
    """Load every declared model before the worker is advertised as ready."""
    models = get_settings().model_names()
    for model in models:
        engine = engine_for(model)
        # one real forward pass, so the first request does not pay for lazy initialisation
        engine.runner.forward(engine.runner.tokenize(["warm up"]))
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(target=_heartbeat, args=(hostname, models), daemon=True, name="heartbeat").start()
    log.info("worker %s ready: %s", hostname, ", ".join(models))


@signals.worker_shutdown.connect
def _drain(**kw: Any) -> None:
    """Finish waiting batches before the process exits."""
    _heartbeat_stop.set()
    for engine in list(_engines.values()):
        engine.close()
    stop_logging()


__all__ = ["engine_for", "infer"]
