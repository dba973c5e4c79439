"""A request's life inside a worker: its job, the pieces it is batched as, and its start.

Both serving loops (the embedding :class:`~workers.core.engine.Engine` and the generation
:class:`~workers.core.decoder.Decoder`) track requests as :class:`Job` objects and record their start
in the store through :func:`start_jobs`, which is where a request started too many times (its
worker died each time) is failed as poison.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import InferqError, PoisonMessage
from schemas.messages import InferenceRequest, InferenceResult, Output, Priority, ResultStatus, now_ms
from workers.store.store import ResultStore

PRIORITY_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


@dataclass
class Job:
    """One request inside the worker, until its result is written."""

    request: InferenceRequest
    timings: dict[str, Any]
    outputs: list[Output | None]
    remaining: int
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    skipped: bool = False  # the store held a terminal state already (cancelled, or a duplicate)
    status: ResultStatus = ResultStatus.QUEUED
    error: InferqError | None = None
    attempts: int = 0  # starts recorded by the store, this one included
    unwritten: bool = False  # its result could not be written (Redis gone past the retries)
    source: dict[str, Any] | None = None  # where the request came from (Kafka coordinates)
    # its Celery message came for the first time (not put back after a worker died): no earlier
    # start can have made it poison, so its ``running`` mark may overlap its forward pass
    first_delivery: bool = False

    @classmethod
    def new(
        cls,
        items: Sequence[tuple[InferenceRequest, dict[str, Any]]],
        sources: Sequence[dict[str, Any] | None] | None = None,
        first_delivery: bool = False,
    ) -> list[Job]:
        """One job per (request, timings so far), with where each came from (Kafka coordinates)."""
        return [
            cls(
                r, dict(t), [None] * len(r.texts()), len(r.texts()), source=src, first_delivery=first_delivery
            )
            for (r, t), src in zip(items, sources or [None] * len(items), strict=True)
        ]

    def finish(self, status: ResultStatus, error: InferqError | None = None) -> None:
        self.status, self.error = status, error
        self.timings["done_ms"] = now_ms()

    @property
    def finished(self) -> bool:
        return self.skipped or self.status.terminal


@dataclass(frozen=True)
class Piece:
    """One input text of a job, tokenised: the unit the engine batches."""

    job: Job
    index: int
    ids: list[int]


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


JobHook = Callable[[Job], None]  # a request the worker refused (poison, or invalid for the model)
