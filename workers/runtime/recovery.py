"""Recovery: what every worker does in the background so that no request is lost or stuck.

- **Owner reaper.** A worker killed mid-batch (``kill -9``, out of memory) leaves its messages
  unacked in kombu's ``unacked`` hash, where the Redis transport would leave them for the whole
  visibility timeout. Every heartbeat puts back at once the messages of instances whose key
  expired (or that restarted under the same node name), and those nobody recorded for
  ``ORPHAN_AFTER_S`` (:mod:`workers.runtime.identity`).
- **Stale requeue.** kombu takes a message off its queue and records it as unacked in two steps;
  a worker killed between them loses the message. The store keeps each queued request's hand-off
  until it starts, and every heartbeat sends again the ones still queued too long.
- **Heartbeat.** Advertises the worker and its models (ops, the exporter and the intake read it).
- **Deadline sweep.** Ends queued requests whose deadline passed, wherever their message waits.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from celery import Celery
from pydantic import ValidationError

from schemas.errors import ModelUnavailable
from schemas.messages import ResultStatus
from schemas.naming import worker_key
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.work import Handoff
from workers.core.jobs import Job
from workers.core.loop import Outlet
from workers.runtime.identity import HEARTBEAT_S, KEY_TTL_S, Instance
from workers.store.presence import ServedModels, advertise, withdraw
from workers.store.store import ResultStore
from workers.transport import kombu
from workers.transport.app import TASK_INFER

log = logging.getLogger(__name__)

DEADLINE_SWEEP_S = 0.25  # how late past its deadline a queued request may still look queued
ORPHAN_AFTER_S = 30.0  # an unacked message nobody owns for this long was lost with its worker


class Recovery:
    """The heartbeat (reaper, requeue, advertising) and the deadline sweep, as two threads."""

    def __init__(
        self,
        settings: Settings,
        store: ResultStore,
        instance: Instance,
        app: Celery,
        outlet: Outlet,
        observer: Observer,
    ) -> None:
        self._s = settings
        self.store = store
        self.instance = instance
        self.app = app
        self.outlet = outlet
        self.observer = observer
        self.served = ServedModels(store.client, settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, hostname: str, models: list[str]) -> None:
        self._threads = [
            threading.Thread(target=self._heartbeat, args=(hostname, models), daemon=True, name="heartbeat"),
            threading.Thread(target=self._sweep_deadlines, daemon=True, name="deadlines"),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads; the heartbeat withdraws the worker from Redis as it ends."""
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        for thread in self._threads:
            thread.join(timeout_s)

    def reap_dead_owners(self) -> int:
        """Put back on their queues the messages held by worker processes that died; returns how many.

        Two kinds: those recorded with an instance whose key is gone, and those no live worker has
        recorded for ``ORPHAN_AFTER_S`` (a worker killed between taking a message from Redis and
        recording it). kombu's restore makes two workers reaping at once restore each message once;
        restoring one that was in fact finished only reruns requests the store already ended,
        which it refuses.
        """
        owners = self.instance.owners()
        alive = self.instance.alive(set(owners.values()))
        dead = [tag for tag, token in owners.items() if token not in alive]
        with kombu.unacked(self.app) as unacked:
            orphans = [tag for tag in unacked.older_than(ORPHAN_AFTER_S) if tag not in owners]
            for tag in dead + orphans:
                unacked.restore(tag)
                self.instance.disown(tag)
        if dead or orphans:
            log.warning("put back %d messages of dead workers and %d unowned ones", len(dead), len(orphans))
        return len(dead) + len(orphans)

    def requeue(self) -> Counter[str]:
        """Send again the requests still queued too long after admission (:func:`requeue_stale`)."""
        s = self._s

        def send(h: Handoff) -> None:
            self.app.send_task(TASK_INFER, args=[[h.item]], queue=h.queue, priority=h.priority)

        counts = requeue_stale(self.store, self.served, s.requeue_queued_after_s, send, self.outlet.refused)
        if counts["requeued"]:
            self.observer.redelivered("requeued", counts["requeued"])
            log.warning(
                "sent %d requests again: still queued %.0f s after admission",
                counts["requeued"],
                s.requeue_queued_after_s,
            )
        if counts["unavailable"]:
            log.warning("failed %d queued requests: no live worker serves their model", counts["unavailable"])
        return counts

    def _heartbeat(self, hostname: str, models: list[str]) -> None:
        """Advertise this worker and its models while it lives; recover what dead ones left."""
        client, key = self.store.client, worker_key(self._s, hostname)
        while True:
            try:
                client.set(key, ",".join(models), ex=KEY_TTL_S)
                advertise(client, self._s, hostname, models, KEY_TTL_S)
                self.instance.keep_alive(hostname)
                self.reap_dead_owners()
                self.requeue()
            except Exception:
                log.warning("heartbeat to Redis failed; retrying", exc_info=True)
            if self._stop.wait(HEARTBEAT_S):
                client.delete(key)
                withdraw(client, self._s, hostname, models)
                self.instance.retire()
                return

    def _sweep_deadlines(self) -> None:
        """Every worker runs this; the store's script makes each expiry happen once."""
        while not self._stop.wait(DEADLINE_SWEEP_S):
            try:
                self.store.expire_due()
            except Exception:
                log.warning("deadline sweep failed; retrying", exc_info=True)


def requeue_stale(
    store: ResultStore,
    served: ServedModels,
    older_than_s: float,
    send: Callable[[Handoff], None],
    reject: Callable[[Job], None] | None = None,
) -> Counter[str]:
    """Send again the requests still queued ``older_than_s`` after admission; counts by outcome.

    Every worker claims the stale hand-offs (each one by one worker per period) and sends them
    again (``send``). A duplicate is harmless: results only move forward and are written once.
    Nothing is sent into a queue no live worker reads: a request for a model nobody serves is failed
    ``model_unavailable`` once the model is past its grace (:mod:`workers.store.presence`), and
    dead-lettered (``reject``) by the worker whose write ended it; within the grace it is left
    queued (claimed again next period).
    """
    counts = Counter[str]()
    failed: list[Job] = []
    live, available = served.served(), served.available()
    for h in store.claim_stale(older_than_s):
        model = h.served_as  # its version's name when it was routed to one (schemas.versions)
        if model in live:
            send(h)
            counts["requeued"] += 1
        elif model in available or (model is not None and served.is_available(model)):
            counts["waiting"] += 1
        elif (job := _unavailable(h)) is not None:
            failed.append(job)
        else:  # unreadable: a worker answers it when it reads the message
            send(h)
            counts["requeued"] += 1
    written = store.advance(j.result() for j in failed)
    for job in (j for j, ok in zip(failed, written, strict=True) if ok):
        counts["unavailable"] += 1
        if reject is not None:
            reject(job)
    return counts


def _unavailable(h: Handoff) -> Job | None:
    """The failed job of a hand-off whose model no live worker serves; None if it cannot be read."""
    try:
        job = Job.of(h.work())
    except (TypeError, KeyError, ValidationError):
        return None
    job.finish(
        ResultStatus.FAILED, ModelUnavailable(f"no live worker has served model {h.served_as!r} for a while")
    )
    return job
