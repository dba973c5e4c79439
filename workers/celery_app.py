"""The Celery application: Redis broker, late acks, one queue per model.

Start a worker with::

    celery -A workers.celery_app worker --pool threads --concurrency 8 -E

The thread pool is deliberate: every task thread hands its requests to the same in-process
:class:`~workers.engine.Engine`, which coalesces them across Celery messages into forward passes.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from schemas.messages import Priority
from schemas.naming import model_queue
from schemas.settings import Settings, get_settings

TASK_INFER = "inferq.infer"
# Redis transport: one list per step, 0 served first. High-priority requests overtake queued
# normal ones already in the broker, not only inside the worker's batcher.
CELERY_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}


def route_by_model(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict | None:
    """Route ``inferq.infer`` to its model's queue (the intake also names the queue directly)."""
    if name != TASK_INFER or not args or not args[0]:
        return None
    return {"queue": model_queue(get_settings(), args[0][0]["request"]["model"])}


def make_app(settings: Settings) -> Celery:
    app = Celery("inferq", include=["workers.tasks"])
    app.conf.update(
        broker_url=settings.celery_broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "priority_steps": sorted(CELERY_PRIORITY.values()),
            "queue_order_strategy": "priority",
        },
        task_acks_late=True,  # ack only once results are written
        task_reject_on_worker_lost=True,  # a killed worker's messages go back to the queue
        task_ignore_result=True,  # results live in our own store, per request
        task_serializer="json",
        accept_content=["json"],
        task_routes=(route_by_model,),
        task_queues=[Queue(model_queue(settings, m)) for m in settings.model_names()],
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,  # each thread holds one message; concurrency sizes the pool
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        worker_send_task_events=True,  # Flower shows every message's real state
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(get_settings())
