"""The worker process as one object: :class:`WorkerRuntime`.

Made once at process start from the settings and an observer, it owns everything a worker
process holds: the model loops (one per model, loaded on first use or at warm-up), the Kafka
producer (dead letters, stream chunks), the process's identity in Redis and the messages it
holds, the result store, and the recovery threads. The Celery adapter
(:mod:`workers.celery_adapter.tasks`) parses each message's items and hands them here.

A message's items run in their model's loop; :meth:`WorkerRuntime.serve` returns once every
result is written, so the task's late ack means "results are in Redis". When a result could not
be written (Redis gone past the client's retries) it raises :class:`Unwritten` and the adapter
puts the message back on its queue instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from celery import Celery
from pydantic import ValidationError

from schemas import results, tracing
from schemas.errors import InferqError, InvalidRequest, ModelUnavailable
from schemas.messages import ErrorInfo, ResultStatus, Timings, now_ms
from schemas.naming import version_queue
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.validation import readable_request_id
from schemas.work import WorkItem
from workers.core.jobs import Job
from workers.core.loop import ModelLoop
from workers.runtime.identity import Instance
from workers.runtime.loops import ModelLoops, build_loop
from workers.runtime.publish import Publisher
from workers.runtime.recovery import Recovery
from workers.store.cache import ResultCache
from workers.store.store import ResultStore
from workers.store.versions import VersionCounts
from workers.transport.app import make_app

log = logging.getLogger(__name__)


class Unwritten(Exception):
    """Results of a message could not be written to Redis: put the message back (results are
    idempotent, so running it again is harmless)."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} results could not be written to Redis")
        self.count = count


class WorkerRuntime:
    """One worker process: its model loops, Kafka producer, identity, store and recovery."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        app: Celery | None = None,
        store: ResultStore | None = None,
    ) -> None:
        """``app``: the Celery app whose broker the worker consumes (for requeues and the owner
        reaper); made from ``settings`` when not given. ``store``: made from ``settings`` too."""
        self.settings = settings
        self.observer = observer
        self.app = app or make_app(settings)
        if store is None:
            store = ResultStore.from_settings(settings, observer)
            store.observer.add(VersionCounts(store.client, settings))  # per-version counts in Redis
        self.store = store
        self.publisher = Publisher(settings)
        # the result cache (None: off); refuses an instance that could evict results (issue 20)
        self.cache = ResultCache.from_settings(settings, self.store.client)
        self.instance = Instance(self.store.client, settings)
        self.loops = ModelLoops(self._build)
        # (model, version) → the INFERQ_WORKER_MODELS entry that serves it, once loaded
        self._versions: dict[tuple[str, str], str] = {}
        self.recovery = Recovery(settings, self.store, self.instance, self.app, self.publisher, observer)

    def _build(self, entry: str) -> ModelLoop:
        """The loop of an ``INFERQ_WORKER_MODELS`` entry (``<model>`` or ``<model>@<variant>``),
        recorded under the version it serves."""
        loop = build_loop(entry, self.settings, self.store, self.observer, self.publisher, self.cache)
        model, _, version = loop.version.partition("@")
        self._versions[(model, version)] = entry
        return loop

    def entries(self) -> list[str]:
        """What this worker serves: its default builds, then its other builds (``<model>@<variant>``)."""
        return [*self.settings.model_names(), *(f"{m}@{v}" for m, v in self.settings.model_variants())]

    def served_versions(self) -> list[str]:
        """The ``<model>@<version>`` of every loaded entry (what results are stamped with)."""
        return sorted(f"{m}@{v}" for m, v in self._versions)

    def version_queues(self) -> list[str]:
        """The Celery queues of the versions this worker loaded (read besides its default queues)."""
        return sorted(version_queue(self.settings, m, v) for m, v in self._versions)

    def loop_for(self, model: str, version: str | None) -> ModelLoop:
        """The loop serving ``version`` of ``model`` (None: its default build). Raises
        :class:`~schemas.errors.InferqError` when this worker cannot serve it."""
        if version is None:
            return self.loops.get(model)
        if (model, version) not in self._versions:  # not loaded yet: load this model's entries
            for entry in self.entries():
                if entry.partition("@")[0] == model:
                    self.loops.get(entry)
        serving = self._versions.get((model, version))
        if serving is None:
            raise ModelUnavailable(f"this worker does not serve version {version!r} of model {model!r}")
        return self.loops.get(serving)

    # -- lifecycle --------------------------------------------------------------------------
    def claim(self, hostname: str) -> None:
        """Go live as a new instance before taking messages (Celery's ``worker_init``)."""
        self.instance.claim(hostname)

    def warm_up(self, hostname: str) -> None:
        """Load every declared model with one real pass, then advertise the worker and start the
        recovery threads (Celery's ``worker_ready``): a worker is advertised only once ready."""
        for entry in self.entries():
            self.loops.get(entry).warm_up()
        # advertised: the default builds by model name (their default queues), every build by version
        served = [*self.settings.model_names(), *self.served_versions()]
        self.recovery.start(hostname, served)
        log.info("worker %s ready: %s", hostname, ", ".join(served))

    def drain(self, timeout_s: float = 5.0) -> None:
        """Finish waiting batches, withdraw the worker and flush the producer (at shutdown)."""
        self.recovery.stop()
        self.loops.close()
        self.recovery.join(timeout_s)
        self.publisher.close(timeout_s)

    # -- the messages this process holds ------------------------------------------------------
    def own(self, task_id: str, tag: str) -> None:
        self.instance.own(task_id, tag)

    def release(self, task_id: str) -> None:
        self.instance.release(task_id)

    # -- serving -----------------------------------------------------------------------------
    def serve(self, items: Sequence[WorkItem], first_delivery: bool = False) -> Counter[str]:
        """Run ``items`` in their models' loops and wait for every result; counts by status
        (``skipped``: the store already held the request's end). Raises :class:`Unwritten` when
        some result could not be written, ``TimeoutError`` when one is not done within the
        visibility timeout. ``first_delivery``: the message was not put back after a worker died."""
        by_version: dict[tuple[str, str | None], list[WorkItem]] = {}
        for item in items:
            by_version.setdefault((item.request.model, item.version), []).append(item)
        counts = Counter[str]()
        jobs: list[Job] = []
        for (model, version), group in by_version.items():
            try:
                loop = self.loop_for(model, version)
            except InferqError as e:  # this worker cannot serve the model: answer, don't retry forever
                log.error("cannot serve %s: %s", model, e)
                self._fail(group, e)
                counts[ResultStatus.FAILED.value] += len(group)
                continue
            jobs += loop.submit(group, first_delivery)
        timeout_s = self.settings.celery_visibility_timeout_s
        for job in jobs:
            if not job.done.wait(timeout_s):
                raise TimeoutError(f"request {job.request.request_id} not finished after {timeout_s} s")
        unwritten = sum(job.unwritten for job in jobs)
        if unwritten:
            raise Unwritten(unwritten)
        counts.update("skipped" if job.skipped else job.status.value for job in jobs)
        return counts

    def _fail(self, items: list[WorkItem], error: InferqError) -> None:
        failed = []
        for item in items:
            job = Job.of(item)
            job.finish(ResultStatus.FAILED, error)
            failed.append(job.result())
        self.store.advance(failed)

    def unreadable(self, raw: Any, error: Exception) -> int:
        """Fail and dead-letter an item of a message this worker cannot read (a field it does not
        know: an intake newer than the worker, mid-upgrade; or anything else malformed); returns 1
        when a result could be written (its id was readable). Raises nothing of the item's: the
        message's other items go on (a store that cannot be reached is raised, as anywhere in a task)."""
        found = raw.get("request") if isinstance(raw, dict) else None
        request: dict[str, Any] = found if isinstance(found, dict) else {}
        rid = readable_request_id(request)
        log.error("cannot read request %s from its Celery message: %r", rid, error)
        info = unreadable_error(error)
        self.publisher.unreadable(raw, rid, info)
        if rid is None:
            return 0
        try:
            timings = Timings(**{**(raw.get("timings") or {}), "done_ms": now_ms()})
        except Exception:
            timings = Timings(done_ms=now_ms())
        failed = results.salvaged_result(
            rid,
            info,
            timings,
            tenant=request.get("tenant"),
            task=request.get("task"),
            model=request.get("model"),
            trace=tracing.from_wire(raw.get("trace")),
        )
        self.store.advance([failed])
        return 1


def unreadable_error(error: Exception) -> ErrorInfo:
    """The answer to an item that could not be read: ``validation_error`` when its request (or
    timings) did not validate, typically an intake newer than the worker; ``internal_error`` when
    the item itself was malformed (not an object, no request)."""
    if isinstance(error, ValidationError):
        return InvalidRequest(
            f"this worker cannot read the request: {error.errors()[0]['msg']}",
            hint="upgrade the workers to the intake's version, then send the request again with a new id",
        ).info()
    return InferqError(  # code internal_error
        f"this worker cannot read the request ({type(error).__name__})",
        detail={"exception": type(error).__name__},
    ).info()
