"""A request's life inside a worker: its job, the pieces it is batched as, and its start.

Both serving loops (the embedding :class:`~workers.core.engine.Engine` and the generation
:class:`~workers.core.decoder.Decoder`) track requests as :class:`Job` objects and record their start
in the store through :func:`start_jobs`, which is where a request started too many times (its
worker died each time) is failed as poison, and write their ends through :func:`write_results`.
A job is hashable by identity (two jobs are the same only if they are the same object), so sets
and dicts of jobs need no ``id()``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import results
from schemas.errors import InferqError, PoisonMessage
from schemas.messages import InferenceRequest, InferenceResult, Output, Priority, ResultStatus, now_ms
from schemas.tracing import TraceContext
from schemas.work import Source, WorkItem
from workers.store.store import ResultStore

log = logging.getLogger(__name__)

PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


class Done:
    """A job's "result written" flag: :class:`threading.Event`'s ``set``/``is_set``/``wait`` on one
    lock held until set (a ``threading.Event`` builds a Condition per job, a few microseconds on
    every request's path). ``set`` may be called more than once, from any thread."""

    __slots__ = ("_flag", "_lock")

    def __init__(self) -> None:
        self._flag = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            with contextlib.suppress(RuntimeError):  # a concurrent set released it first
                self._lock.release()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when ``timeout`` seconds passed first."""
        if self._flag:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            with contextlib.suppress(RuntimeError):  # wake the next waiter, if any
                self._lock.release()
        return self._flag


@dataclass(eq=False)
class Job:
    """One request inside the worker, until its result is written."""

    request: InferenceRequest
    timings: dict[str, Any]
    outputs: list[Output | None]
    remaining: int
    done: Done = field(default_factory=Done)
    started: bool = False
    skipped: bool = False  # the store held a terminal state already (cancelled, or a duplicate)
    status: ResultStatus = ResultStatus.QUEUED
    error: InferqError | None = None
    attempts: int = 0  # starts recorded by the store, this one included
    unwritten: bool = False  # its result could not be written (Redis gone past the retries)
    source: Source | None = None  # where the request came from (Kafka coordinates)
    trace: TraceContext | None = None  # the intake's span for it (schemas.tracing): its result's trace
    # its Celery message came for the first time (not put back after a worker died): no earlier
    # start can have made it poison, so its ``running`` mark may overlap its forward pass
    first_delivery: bool = False
    cached: list[int] = field(default_factory=list)  # indices of inputs answered from the result cache

    @classmethod
    def new(cls, items: Sequence[WorkItem], first_delivery: bool = False) -> list[Job]:
        """One job per work item (its request, timings so far and Kafka source)."""
        return [cls.of(item, first_delivery) for item in items]

    @classmethod
    def of(cls, item: WorkItem, first_delivery: bool = False) -> Job:
        n = len(item.request.texts())
        timings = item.timings.model_dump(exclude_none=True)
        return cls(
            item.request,
            timings,
            [None] * n,
            n,
            source=item.source,
            trace=item.trace,
            first_delivery=first_delivery,
        )

    def finish(self, status: ResultStatus, error: InferqError | None = None) -> None:
        self.status, self.error = status, error
        self.timings["done_ms"] = now_ms()

    @property
    def finished(self) -> bool:
        return self.skipped or self.status.terminal

    def result(
        self, model_version: str | None = None, outputs: Sequence[Any] | None = None
    ) -> InferenceResult:
        """Its result as it stands (status, timings, error), with the model's ``outputs`` if any."""
        return results.result(
            self.request,
            self.status,
            self.timings,
            self.error,
            model_version=model_version,
            outputs=outputs,
            trace=self.trace,
            cached=self.cached,
        )


def distinct(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` without repeats, in first-seen order (the jobs of a batch's pieces or sequences)."""
    return list(dict.fromkeys(jobs))


@dataclass(frozen=True, eq=False)
class Piece:
    """One input text of a job, tokenised: the unit the engine batches."""

    job: Job
    index: int
    ids: list[int]
    key: str | None = None  # its result-cache key; None: not cached (no cache, or not deterministic)


def start_jobs(
    store: ResultStore, jobs: list[Job], result: Callable[[Job], InferenceResult], max_attempts: int
) -> list[Job]:
    """Record ``running`` for jobs about to start; returns the ones failed as poison.

    The store refuses a job that already ended (cancelled, or finished by a duplicate delivery):
    it is marked ``skipped``. A job started more than ``max_attempts`` times (its worker died each
    time) is failed as poison instead of being run again.
    """
    poisoned = []
    for job, n in zip(jobs, store.start([result(j) for j in jobs]), strict=True):
        job.skipped, job.attempts = n == 0, n
        if n > max_attempts:
            job.finish(
                ResultStatus.FAILED,
                PoisonMessage(f"request was started {n - 1} times and never finished; not run again"),
            )
            poisoned.append(job)
    return poisoned


def write_results(store: ResultStore, jobs: Sequence[Job], result: Callable[[Job], InferenceResult]) -> None:
    """Write the terminal results of ``jobs`` not skipped, in one round trip. A write that fails
    (Redis gone past the client's retries) marks them ``unwritten``, so the Celery task puts their
    message back instead of acking it; never raises. The caller sets the jobs ``done``."""
    todo = [j for j in jobs if not j.skipped]
    if not todo:
        return
    try:
        store.advance([result(j) for j in todo])
    except Exception:
        log.exception("could not write %d results; their messages go back to the queue", len(todo))
        for j in todo:
            j.unwritten = True
