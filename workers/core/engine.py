"""One model's serving loop: tokenise on arrival, batch, forward, write each result.

Callers (Celery task threads) :meth:`Engine.submit` requests and wait on the returned jobs; the
engine's own thread takes batches from the :class:`~workers.core.batcher.Batcher`, runs them and writes
results per request as soon as their last text is computed. Texts, not requests, are the unit of
batching, so a request with many inputs spreads over batches and a batch mixes requests.
Tokenisation happens on the callers' threads, overlapped with the forward pass of the previous
batch, so the model never waits for it.

Each batch's requests are marked ``running`` in the store; one the store refuses (it was
cancelled, or a duplicate delivery already finished it) ends without a write. For requests whose
Celery message came for the first time the mark runs on a helper thread during the forward pass
(a Redis round trip off every batch's path; a request cancelled in that window is computed and its
output dropped). A batch holding a redelivered request is marked first, so a request whose
worker died on it too often (poison) never reaches the model again. Expired requests never reach
the model. A failure inside a forward pass is isolated by splitting the batch
and retrying the halves, so one bad input fails only its own request; an out-of-memory error also
lowers the batcher's token ceiling for the rest of the process's life.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from schemas.errors import DeadlineExpired, ModelError
from schemas.messages import InferenceResult, Output, ResultStatus, now_ms
from schemas.observer import BatchStats, Observer
from schemas.tracing import new_span_id
from schemas.work import WorkItem
from workers.core.batcher import Batcher, BatchPolicy, padded_tokens
from workers.core.cache import CacheKeys, Lookup, cached_outputs, encode_output, look_up
from workers.core.jobs import PRIORITY_RANK, Job, Piece, distinct, start_jobs, write_results
from workers.core.loop import Outlet
from workers.core.runners.base import Runner
from workers.core.wait_policy import CostModel, FixedWait, WaitPolicy
from workers.store.cache import ResultCache
from workers.store.store import TRANSIENT_ERRORS, ResultStore

log = logging.getLogger(__name__)


class Engine:
    """Batches and runs one model's requests on a dedicated thread."""

    def __init__(
        self,
        runner: Runner,
        store: ResultStore,
        policy: BatchPolicy,
        wait: WaitPolicy | None = None,
        cost: CostModel | None = None,
        max_attempts: int = 3,
        observer: Observer | None = None,
        outlet: Outlet | None = None,
        cache: ResultCache | None = None,
        cache_keys: CacheKeys | None = None,
    ) -> None:
        """``outlet`` is told of each job failed as poison (started more than ``max_attempts``
        times): the worker dead-letters it. ``cache_keys`` (with the result ``cache``, which may
        be down) key each input: hits skip the model, identical inputs of a batch run once."""
        self.runner = runner
        self.cache = cache
        self.cache_keys = cache_keys
        self.observer = observer or Observer()
        self.outlet = outlet or Outlet()
        self.store = store
        self.cost = cost or CostModel()
        self.max_attempts = max_attempts
        # the cost model both times the wait and cuts batches by the padding they would carry
        self.batcher: Batcher[Piece] = Batcher(
            policy, wait or FixedWait(policy.max_wait_ms), cost=self.cost.rates
        )
        # records each batch's start in the store while its forward pass runs (first deliveries)
        self._marker = ThreadPoolExecutor(1, thread_name_prefix=f"mark-{runner.name}")
        self._thread = threading.Thread(target=self._loop, name=f"engine-{runner.name}", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[WorkItem], first_delivery: bool = False) -> list[Job]:
        """Tokenise (on the caller's thread) and enqueue; returns one job per request.

        ``first_delivery``: the requests' Celery message was not put back after a worker died,
        so their ``running`` mark may overlap the forward pass.

        With the result cache, the message's inputs are looked up here first (one MGET): hits never
        enter the batcher (they would take a batch's slots from inputs the model must compute), and
        a request answered whole is written from this thread, the model's never involved.
        """
        jobs = Job.new(items, first_delivery)
        all_ids = iter(self.runner.tokenize([text for job in jobs for text in job.request.texts()]))
        pieces: list[Piece] = []
        for job in jobs:
            ids_of = [next(all_ids) for _ in range(job.remaining)]
            keys = self.cache_keys.keys(job.request, ids_of) if self.cache_keys else [None] * len(ids_of)
            pieces += [Piece(job, i, ids, key) for i, (ids, key) in enumerate(zip(ids_of, keys, strict=True))]
        if self.cache is not None:
            pieces = self._answer_hits(jobs, pieces)
        if pieces or not jobs:  # one wake-up of the model thread per message (none if all hit)
            self.batcher.put_many(
                (p, len(p.ids), PRIORITY_RANK[p.job.request.priority], p.job.request.tenant or "")
                for p in pieces
            )
        return jobs

    @property
    def version(self) -> str:
        """The served model's version (``<model>@<digest>``), stamped on its results."""
        return str(self.runner.version)

    def _answer_hits(self, jobs: list[Job], pieces: list[Piece]) -> list[Piece]:
        """Fill in the outputs the cache holds (on the caller's thread, before the model thread sees
        the jobs); write the requests answered whole. Returns the pieces left to compute."""
        found = cached_outputs(self.cache, pieces)
        if not found:
            return pieces
        rest = []
        for p in pieces:
            output = found.get(p.key) if p.key is not None else None
            if output is None:
                rest.append(p)
                continue
            p.job.outputs[p.index] = output
            p.job.cached.append(p.index)
            p.job.remaining -= 1
        self.observer.cache_used(self.runner.name, len(pieces) - len(rest), 0, 0)
        answered = [j for j in jobs if j.remaining == 0]
        if answered:
            self._serve_cached(answered)
        return rest

    def _serve_cached(self, jobs: list[Job]) -> None:
        """Start and end requests the cache answered whole, as a batch of no forward pass would."""
        start = now_ms()
        try:
            for job in jobs:
                deadline = job.request.deadline_ms()
                if deadline is not None and deadline <= start:
                    job.finish(
                        ResultStatus.EXPIRED, DeadlineExpired("deadline passed before it was answered")
                    )
            fresh = [j for j in jobs if not j.finished]
            for job in fresh:
                job.started, job.status = True, ResultStatus.RUNNING
                job.timings.update(batch_start_ms=start, batch_size=0)
            for job in start_jobs(self.store, fresh, self._result, self.max_attempts):
                self._refused(job)
            for job in fresh:
                if not job.finished:
                    job.finish(ResultStatus.DONE)
        except TRANSIENT_ERRORS:  # Redis gone past the retries: hand the message back
            log.exception("result store unreachable; these requests go back to the queue")
            for job in jobs:
                job.unwritten = True
                job.done.set()
            return
        for job in jobs:
            if job.skipped:
                job.done.set()
        self._write([j for j in jobs if not j.skipped])

    def warm_up(self) -> None:
        """One real forward pass, so the first request pays no lazy initialisation; then a few timed
        passes at two batch sizes and two lengths fit the cost model the batcher decides by."""
        ids = self.runner.tokenize(["warm up"])[0]
        self.runner.forward([ids])

        def run_ms(texts: int, tokens: int) -> float:
            seq = (list(ids) * (tokens // max(1, len(ids)) + 1))[: max(1, tokens)]
            start = time.perf_counter()
            self.runner.forward([seq] * texts)
            return (time.perf_counter() - start) * 1000.0

        self.cost.calibrate(run_ms)

    def close(self, timeout_s: float = 30.0) -> None:
        """Run what is waiting, then stop the thread."""
        self.batcher.close()
        self._thread.join(timeout_s)
        self._marker.shutdown(wait=False)

    def _loop(self) -> None:
        while True:
            batch = self.batcher.take(timeout_s=1.0)
            if batch is None:
                if self.batcher.closed:  # drained and closed
                    return
                continue
            try:
                self.run_batch([e.item for e in batch])
            except TRANSIENT_ERRORS:  # Redis gone past the retries: hand the messages back
                log.exception("result store unreachable; this batch's messages go back to the queue")
                self._give_back([e.item for e in batch])
            except Exception:  # never let one batch kill the model thread
                log.exception("batch failed outside the model; its requests are failed")
                self._fail_all([e.item for e in batch])

    # -- one batch ------------------------------------------------------------------------
    def run_batch(self, pieces: list[Piece]) -> None:
        start = now_ms()
        batch_id = secrets.token_hex(6)
        live = self._drop_expired(pieces, start)
        marking: Future[list[Piece]] | None = None
        if live and all(p.job.first_delivery for p in live):
            marking = self._marker.submit(self._mark_running, live, start, batch_id)
        elif live:
            live = self._mark_running(live, start, batch_id)
        found = look_up(self.cache, live) if self.cache_keys else Lookup(compute=live)
        compute = found.compute
        forwarded = [len(p.ids) for p in compute]
        served = [p.job for p in live]  # the requests the batch serves (its span links to each)
        forward_start = now_ms()
        rows = self._forward_isolated([p.ids for p in compute]) if compute else []
        compute_ms = now_ms() - forward_start
        pairs: list[tuple[Piece, Any]] = [
            (twin, row) for p, row in zip(compute, rows, strict=True) for twin in [p, *found.twins.get(p, ())]
        ]
        if marking is not None:  # keep what the jobs the store let start computed
            kept = set(marking.result())
            pairs = [(p, r) for p, r in pairs if p in kept]
            found.hits = [(p, o) for p, o in found.hits if p in kept]
        # expired, and failed as poison: their results are written with this batch's
        ended = [p.job for p in pieces if p.job.finished and not p.job.done.is_set()]
        failed = 0
        fresh: dict[str, Output] = {}  # computed outputs to put in the cache, by key
        for piece, output in found.hits:
            self._take(piece, output, cached=True)
            ended.append(piece.job)
        for piece, row in pairs:
            failed += self._absorb(piece, row)
            if piece.key is not None and not isinstance(row, Exception) and piece.key not in fresh:
                done = piece.job.outputs[piece.index]
                if done is not None:
                    fresh[piece.key] = done
            ended.append(piece.job)
        for piece in pieces:  # skipped jobs end here without a write: the store has their answer
            if piece.job.skipped and not piece.job.done.is_set():
                piece.job.done.set()
        self._write([j for j in distinct(ended) if j.finished and not j.skipped])
        if self.cache_keys is not None:
            self._remember(fresh, found)
        if forwarded:
            self._observe(batch_id, forwarded, compute_ms, failed, served, forward_start)

    def _remember(self, fresh: dict[str, Output], found: Lookup) -> None:
        """Put what this batch computed in the cache (one pipelined round trip), after the results
        were written; tell the observer the hits and misses."""
        try:
            stored = (
                self.cache.put_many({k: encode_output(o) for k, o in fresh.items()}) if self.cache else True
            )
        except Exception:  # the cache never fails a batch: its results are written already
            log.exception("could not put %d outputs in the result cache", len(fresh))
            stored = False
        errors = int(found.failed) + int(not stored)
        if found.hits or found.misses or errors:
            self.observer.cache_used(self.runner.name, len(found.hits), found.misses, errors)

    def _observe(
        self,
        batch_id: str,
        lengths: list[int],
        compute_ms: float,
        failed: int,
        served: list[Job],
        started_ms: float,
    ) -> None:
        """Feed the cost model and the observer (metrics, logs) with a forward pass just run
        (``lengths``: its inputs' token counts; ``served``: its pieces' jobs); after the writes,
        off the requests' path."""
        traces = tuple(j.trace for j in distinct(served) if j.trace is not None)
        stats = BatchStats(
            self.runner.name,
            batch_id,
            len(lengths),
            sum(lengths),
            padded_tokens(lengths),
            compute_ms,
            failed,
            self.runner.device,
            self.runner.version,
            span_id=new_span_id(),
            traces=traces,
            started_ms=started_ms,
        )
        self.cost.observe(stats.padded_tokens, stats.size, stats.compute_ms)
        self.observer.batch_done(stats)

    def _drop_expired(self, pieces: list[Piece], now: float) -> list[Piece]:
        live = []
        for p in pieces:
            deadline = p.job.request.deadline_ms()
            if not p.job.finished and deadline is not None and deadline <= now:
                p.job.finish(ResultStatus.EXPIRED, DeadlineExpired("deadline passed before the model ran"))
            if not p.job.finished:
                live.append(p)
        return live

    def _mark_running(self, live: list[Piece], start: float, batch_id: str) -> list[Piece]:
        """Mark first-time jobs ``running``; returns the pieces still to run.

        The store refuses a job that already ended (cancelled, or finished by a duplicate
        delivery): it is skipped. A job started more than ``max_attempts`` times (its worker died
        each time) is failed as poison instead of being run again.
        """
        fresh: list[Job] = []
        for p in live:
            p.job.timings.update(
                batch_start_ms=p.job.timings.get("batch_start_ms") or start,
                batch_id=batch_id,
                batch_size=len(live),
            )
            if not p.job.started:
                p.job.started = True
                p.job.status = ResultStatus.RUNNING
                fresh.append(p.job)
        for job in start_jobs(self.store, distinct(fresh), self._result, self.max_attempts):
            self._refused(job)
        return [p for p in live if not p.job.skipped and not p.job.finished]

    def _forward_isolated(self, batch: list[list[int]]) -> list[Any]:
        """Rows for each input; an input whose forward raised gets its exception instead."""
        try:
            rows = self.runner.forward(batch)
            return [rows[i] for i in range(len(batch))]
        except Exception as e:
            if is_out_of_memory(e):
                self._lower_ceiling(batch)
            if len(batch) == 1:
                return [e]
            mid = len(batch) // 2
            return self._forward_isolated(batch[:mid]) + self._forward_isolated(batch[mid:])

    def _lower_ceiling(self, batch: list[list[int]]) -> None:
        """After running out of memory on ``batch``, cap batches at half its padded size."""
        failed_at = padded_tokens([len(ids) for ids in batch])
        ceiling = self.batcher.lower_token_ceiling(max(1, failed_at // 2))
        log.warning(
            "%s ran out of memory on %d padded tokens; token ceiling now %d",
            self.runner.name,
            failed_at,
            ceiling,
        )
        release_cached_memory()

    def _absorb(self, piece: Piece, row: Any) -> int:
        """Store one input's output in its job; returns 1 if it failed."""
        job = piece.job
        if job.finished:
            return 0
        try:
            if isinstance(row, Exception):
                raise row
            output = self.runner.output(row, job.request)
        except Exception as e:
            job.finish(ResultStatus.FAILED, ModelError(f"input {piece.index} failed in the model: {e!r}"))
            return 1
        self._take(piece, output)
        return 0

    def _take(self, piece: Piece, output: Output, cached: bool = False) -> None:
        """One input's output is ready (``cached``: read from the result cache)."""
        job = piece.job
        if job.finished or job.outputs[piece.index] is not None:
            return
        job.outputs[piece.index] = output
        if cached:
            job.cached.append(piece.index)
        job.remaining -= 1
        if job.remaining == 0:
            job.finish(ResultStatus.DONE)

    def _refused(self, job: Job) -> None:
        try:
            self.outlet.refused(job)
        except Exception:  # the failed result is still written; the letter is best effort
            log.exception("the outlet failed on refused request %s", job.request.request_id)

    def _write(self, jobs: list[Job]) -> None:
        """Write terminal results (:func:`~workers.core.jobs.write_results`), then release the jobs."""
        try:
            write_results(self.store, jobs, self._result)
        finally:
            for j in jobs:
                j.done.set()

    def _give_back(self, pieces: list[Piece]) -> None:
        for p in pieces:
            if not p.job.done.is_set():
                p.job.unwritten = True
                p.job.done.set()

    def _fail_all(self, pieces: list[Piece]) -> None:
        jobs = distinct(p.job for p in pieces if not p.job.done.is_set())
        for j in jobs:
            if not j.finished:
                j.finish(ResultStatus.FAILED, ModelError("the worker failed while running this batch"))
        self._write([j for j in jobs if not j.skipped])
        for j in jobs:
            j.done.set()

    def _result(self, job: Job) -> InferenceResult:
        outputs = [o for o in job.outputs if o is not None] if job.status is ResultStatus.DONE else None
        return job.result(self.runner.version, outputs)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/CPU allocation failures (torch raises several types for them)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return (
        type(error).__name__ == "OutOfMemoryError"
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def release_cached_memory() -> None:
    """Give cached allocator blocks back after an out-of-memory error (CUDA only)."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # never let cleanup raise inside the error path
        log.debug("could not release cached memory", exc_info=True)
