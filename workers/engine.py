"""One model's serving loop: tokenise on arrival, batch, forward, write each result.

Callers (Celery task threads) :meth:`Engine.submit` requests and wait on the returned jobs; the
engine's own thread takes batches from the :class:`~workers.batcher.Batcher`, runs them and writes
results per request as soon as their last text is computed. Texts, not requests, are the unit of
batching, so a request with many inputs spreads over batches and a batch mixes requests.

A failure inside a forward pass is isolated by splitting the batch and retrying the halves, so
one bad input fails only its own request. Expired requests never reach the model.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import DeadlineExpired, InferqError, ModelError
from schemas.messages import (
    InferenceRequest,
    InferenceResult,
    Output,
    ResultStatus,
    Timings,
    now_ms,
)
from workers.batcher import Batcher, BatchPolicy
from workers.result_store import ResultStore
from workers.runners.base import Runner

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One request inside the worker, until its result is written."""

    request: InferenceRequest
    timings: dict[str, Any]
    outputs: list[Output | None]
    remaining: int
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    status: ResultStatus = ResultStatus.QUEUED
    error: InferqError | None = None

    def finish(self, status: ResultStatus, error: InferqError | None = None) -> None:
        self.status, self.error = status, error
        self.timings["done_ms"] = now_ms()

    @property
    def finished(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True)
class Piece:
    job: Job
    index: int
    ids: list[int]


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass did; handed to hooks (metrics, logs)."""

    model: str
    batch_id: str
    size: int
    tokens: int
    padded_tokens: int
    compute_ms: float
    failed: int


BatchHook = Callable[[BatchStats], None]


class Engine:
    """Batches and runs one model's requests on a dedicated thread."""

    def __init__(self, runner: Runner, store: ResultStore, policy: BatchPolicy) -> None:
        self.runner = runner
        self.store = store
        self.batcher: Batcher[Piece] = Batcher(policy)
        self.hooks: list[BatchHook] = []
        self._thread = threading.Thread(target=self._loop, name=f"engine-{runner.name}", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[tuple[InferenceRequest, dict[str, Any]]]) -> list[Job]:
        """Tokenise (on the caller's thread) and enqueue; returns one job per request."""
        jobs = []
        for request, timings in items:
            texts = request.texts()
            job = Job(request, dict(timings), [None] * len(texts), len(texts))
            for i, text in enumerate(texts):
                ids = self.runner.tokenize(text)
                self.batcher.put(Piece(job, i, ids), len(ids))
            jobs.append(job)
        return jobs

    def close(self, timeout_s: float = 30.0) -> None:
        """Run what is waiting, then stop the thread."""
        self.batcher.close()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            batch = self.batcher.take(timeout_s=1.0)
            if batch is None:
                if self.batcher.closed:  # drained and closed
                    return
                continue
            try:
                self.run_batch([e.item for e in batch])
            except Exception:  # never let one batch kill the model thread
                log.exception("batch failed outside the model; its requests are failed")
                self._fail_all([e.item for e in batch])

    # -- one batch ------------------------------------------------------------------------
    def run_batch(self, pieces: list[Piece]) -> None:
        start = now_ms()
        batch_id = secrets.token_hex(6)
        live = self._drop_expired(pieces, start)
        ended = {id(p.job): p.job for p in pieces if p.job.finished and not p.job.done.is_set()}
        if live:
            self._mark_running(live, start, batch_id)
            forward_start = now_ms()
            rows = self._forward_isolated([p.ids for p in live])
            compute_ms = now_ms() - forward_start
            failed = 0
            for piece, row in zip(live, rows, strict=True):
                failed += self._absorb(piece, row)
                if piece.job.finished:
                    ended[id(piece.job)] = piece.job
            stats = BatchStats(
                self.runner.name,
                batch_id,
                len(live),
                sum(len(p.ids) for p in live),
                len(live) * max(len(p.ids) for p in live),
                compute_ms,
                failed,
            )
            for hook in self.hooks:
                hook(stats)
        self._write(list(ended.values()))

    def _drop_expired(self, pieces: list[Piece], now: float) -> list[Piece]:
        live = []
        for p in pieces:
            deadline = p.job.request.deadline_ms()
            if not p.job.finished and deadline is not None and deadline <= now:
                p.job.finish(ResultStatus.EXPIRED, DeadlineExpired("deadline passed before the model ran"))
            if not p.job.finished:
                live.append(p)
        return live

    def _mark_running(self, live: list[Piece], start: float, batch_id: str) -> None:
        fresh = []
        for p in live:
            p.job.timings.update(
                batch_start_ms=p.job.timings.get("batch_start_ms") or start,
                batch_id=batch_id,
                batch_size=len(live),
            )
            if not p.job.started:
                p.job.started = True
                p.job.status = ResultStatus.RUNNING
                fresh.append(self._result(p.job))
        self.store.advance(fresh)

    def _forward_isolated(self, batch: list[list[int]]) -> list[Any]:
        """Rows for each input; an input whose forward raised gets its exception instead."""
        try:
            rows = self.runner.forward(batch)
            return [rows[i] for i in range(len(batch))]
        except Exception as e:
            if len(batch) == 1:
                return [e]
            mid = len(batch) // 2
            return self._forward_isolated(batch[:mid]) + self._forward_isolated(batch[mid:])

    def _absorb(self, piece: Piece, row: Any) -> int:
        """Store one input's output in its job; returns 1 if it failed."""
        job = piece.job
        if job.finished:
            return 0
        try:
            if isinstance(row, Exception):
                raise row
            job.outputs[piece.index] = self.runner.output(row, job.request)
        except Exception as e:
            job.finish(ResultStatus.FAILED, ModelError(f"input {piece.index} failed in the model: {e!r}"))
            return 1
        job.remaining -= 1
        if job.remaining == 0:
            job.finish(ResultStatus.DONE)
        return 0

    def _write(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            self.store.advance([self._result(j) for j in jobs])
        finally:
            for j in jobs:
                j.done.set()

    def _fail_all(self, pieces: list[Piece]) -> None:
        jobs = {id(p.job): p.job for p in pieces if not p.job.done.is_set()}.values()
        for j in jobs:
            if not j.finished:
                j.finish(ResultStatus.FAILED, ModelError("the worker failed while running this batch"))
        try:
            self._write(list(jobs))
        except Exception:
            log.exception("could not write failed results")

    def _result(self, job: Job) -> InferenceResult:
        r = job.request
        done = job.status is ResultStatus.DONE
        return InferenceResult(
            request_id=r.request_id,
            status=job.status,
            task=r.task,
            model=r.model,
            model_version=self.runner.version,
            tenant=r.tenant,
            outputs=[o for o in job.outputs if o is not None] if done else None,
            error=job.error.info() if job.error else None,
            timings=Timings(**job.timings),
        )
