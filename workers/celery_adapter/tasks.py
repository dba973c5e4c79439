"""The Celery adapter: the ``inferq.infer`` task and the worker's signal handlers, each delegating
to the process's :class:`~workers.runtime.WorkerRuntime`.

The runtime is made once per process (at ``worker_init``, or on first use) from the environment's
settings, with :class:`~workers.telemetry.observe.Telemetry` as its observer. One Celery message
carries up to ``INFERQ_TRANSPORT_BATCH_SIZE`` work items for one model; each is parsed here, at
the boundary (:class:`~schemas.work.WorkItem`), and one that cannot be is answered and
dead-lettered while the others are served.
"""

from __future__ import annotations

import functools
import gc
import logging
import socket
from collections import Counter
from typing import Any

from celery import signals
from celery.exceptions import Reject

from schemas.errors import ConfigurationError
from schemas.messages import ResultStatus
from schemas.settings import get_settings
from schemas.work import WorkItem
from workers.runtime import Unwritten, WorkerRuntime
from workers.telemetry.logs import configure_logging, stop_logging
from workers.telemetry.observe import Telemetry
from workers.transport.app import TASK_INFER, make_app
from workers.transport.kombu import delivery_tag
from workers.transport.strategy import STRATEGY

log = logging.getLogger(__name__)
EX_CONFIG = 78  # sysexits.h: a configuration error (the supervisor should not restart in a loop)

settings = get_settings()
app = make_app(settings)


@functools.cache
def runtime() -> WorkerRuntime:
    """The process's one runtime."""
    return WorkerRuntime(settings, Telemetry(settings), app)


@app.task(name=TASK_INFER, bind=True, acks_late=True, Strategy=STRATEGY)
def infer(self: Any, items: list[Any]) -> dict[str, int]:
    """Run a message's work items; returns counts by status."""
    rt, counts, work = runtime(), Counter[str](), []
    for raw in items if isinstance(items, list) else [items]:
        try:
            work.append(WorkItem.parse(raw))
        except Exception as e:  # e.g. sent by a newer intake: answer it, keep the others going
            counts[ResultStatus.FAILED.value] += rt.unreadable(raw, e)
    # kombu marks a message it puts back (its worker died, or it was rejected) as redelivered
    first = not (self.request.delivery_info or {}).get("redelivered", False)
    try:
        counts.update(rt.serve(work, first_delivery=first))
    except Unwritten as e:  # the store was unreachable: run this message again later
        raise Reject(str(e), requeue=True) from e
    return dict(counts)


def _hostname(sender: Any) -> str:
    return getattr(sender, "hostname", None) or socket.gethostname()


@signals.task_received.connect
def _own(request: Any = None, **kw: Any) -> None:
    """Record that this process holds the message, as it arrives (prefetched ones included)."""
    tag = delivery_tag(request)
    if tag:
        runtime().own(request.id, tag)


@signals.task_postrun.connect
def _release(task_id: str | None = None, **kw: Any) -> None:
    if task_id:
        runtime().release(task_id)


@signals.worker_init.connect
def _claim_instance(sender: Any = None, **kw: Any) -> None:
    try:
        rt = runtime()
    except ConfigurationError as e:  # Celery logs and swallows a handler's Exception: exit instead
        log.critical("worker cannot start: %s (%s)", e, e.hint)
        raise SystemExit(EX_CONFIG) from e
    rt.claim(_hostname(sender))


@signals.setup_logging.connect
def _setup_logging(**kw: Any) -> None:
    """ECS JSON logs (stderr + Elasticsearch) instead of Celery's own format."""
    configure_logging(settings, "worker")


@signals.worker_ready.connect
def _warm_up(sender: Any = None, **kw: Any) -> None:
    rt = runtime()
    rt.warm_up(_hostname(sender))
    # the queues of the versions just loaded (their names are their digests, known only now);
    # ``sender`` is the worker's consumer, which starts reading them at once
    for queue in rt.version_queues():
        if hasattr(sender, "add_task_queue"):
            sender.add_task_queue(queue)
    freeze_startup_heap()


def freeze_startup_heap() -> None:
    """Move every object alive once the worker is ready (modules, models, pydantic and Celery
    machinery: some 450,000 tracked objects) out of the cyclic collector's reach.

    Python runs a full collection whenever the objects that survived since the last one reach a
    quarter of the long-lived heap; each walked that whole start-up heap (hundreds of ms), and a
    burst's jobs and results trigger one every few thousand requests. Frozen objects are never
    walked again (nor freed if they became cyclic garbage: start-up objects live as long as the
    process anyway); what requests allocate is collected as before.
    """
    gc.collect()  # the start-up garbage goes now, not frozen with the rest
    gc.freeze()


@signals.worker_shutdown.connect
def _drain(**kw: Any) -> None:
    runtime().drain()
    stop_logging()


__all__ = ["app", "infer", "runtime"]
