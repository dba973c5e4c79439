"""The Celery application: Redis broker, late acks, one queue per model.

Start a worker with::

    celery -A workers.celery_adapter worker --pool threads --concurrency 8 -E

The thread pool is deliberate: every task thread hands its requests to the same in-process
:class:`~workers.core.engine.Engine`, which coalesces them across Celery messages into forward passes.
"""

from __future__ import annotations

import functools
from typing import Any

from celery import Celery
from kombu import Queue

from schemas.connections import celery_broker_ssl
from schemas.messages import Priority
from schemas.naming import model_queue, version_queue
from schemas.settings import Settings, get_settings
from workers.transport.kombu import harden_channel
from workers.transport.serializer import NAME as ORJSON
from workers.transport.serializer import register_orjson

TASK_INFER = "inferq.infer"
# Redis transport: one list per step, 0 served first. High-priority requests overtake queued
# normal ones already in the broker, not only inside the worker's batcher.
CELERY_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}


def router(settings: Settings) -> Any:
    """Celery's router: ``inferq.infer`` to its model's queue, or its version's when the intake
    routed it to one (the intake also names the queue directly), read from the first item's wire form."""

    def route_by_model(
        name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
    ) -> dict | None:
        if name != TASK_INFER or not args or not args[0]:
            return None
        first = args[0][0]
        model, version = first["request"]["model"], first.get("version")
        if isinstance(version, str):  # routed to a version (schemas.versions)
            return {"queue": version_queue(settings, model, version)}
        return {"queue": model_queue(settings, model)}

    return route_by_model


def make_app(settings: Settings) -> Celery:
    """The Celery app of ``settings``' broker (kombu's Redis channel hardened first)."""
    harden_channel()
    register_orjson()
    app = Celery("inferq")
    app.conf.update(
        broker_url=settings.celery_broker_url,
        broker_use_ssl=celery_broker_ssl(settings),  # rediss:// brokers: verify the certificate
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a Redis restart is waited out, never fatal
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "priority_steps": sorted(CELERY_PRIORITY.values()),
            "queue_order_strategy": "priority",
        },
        task_acks_late=True,  # ack only once results are written
        task_reject_on_worker_lost=True,  # a killed worker's messages go back to the queue
        task_ignore_result=True,  # results live in our own store, per request
        task_serializer=ORJSON if settings.transport_serializer == "orjson" else "json",
        accept_content=["json", ORJSON],  # both, whatever this process writes (rolling upgrades)
        task_routes=(router(settings),),
        task_queues=[Queue(model_queue(settings, m)) for m in settings.model_names()],
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,  # each thread holds one message; concurrency sizes the pool
        worker_concurrency=settings.celery_threads(),
        worker_pool="threads",
        worker_send_task_events=True,  # Flower shows every message's real state
        # Flower lists a task from its arrival at a worker; the sent event, sent by the intake for
        # each message, costs it ~0.8 ms a message (measured), on the path of every lone request
        task_send_sent_event=settings.celery_sent_events,
        worker_hijack_root_logger=False,
        # broadcast commands (shutdown, pool restart, autoscale) reach a worker only when asked for:
        # Flower, or anyone who can write to the broker, could otherwise stop every worker
        worker_enable_remote_control=settings.celery_remote_control,
    )
    return app


def __getattr__(name: str) -> Any:
    """``app``: the broker's app from the environment's settings, made when first asked for, for
    ``celery -A workers.transport.app flower`` (the worker's app is the Celery adapter's)."""
    if name == "app":
        return _environment_app()
    raise AttributeError(name)


@functools.cache
def _environment_app() -> Celery:
    return make_app(get_settings())
