"""Continuous (iteration-level) batching of one causal language model: the ``generate`` task.

Celery task threads :meth:`Decoder.submit` requests (tokenised on their own thread) and wait on
the returned jobs, as with the embedding :class:`~workers.core.engine.Engine`. The decoder's thread
runs one loop, one iteration per decode step:

1. **join** — waiting prompts enter the running batch while it has room (``max_running``
   sequences, and ``max_batch_tokens`` of KV cache reserved: prompt + max new tokens each, so a
   running sequence never runs out of room). They are prefilled together and their KV rows
   appended to the batch (:class:`~workers.core.runners.causal.KVBatch`). While others run, the
   prefill goes one chunk per iteration (sized by :mod:`workers.core.chunking` to cost about
   ``prefill_stall_steps`` decode steps), so a long prompt joining delays the running sequences'
   next token by one chunk, not by the whole prompt. With
   ``static`` batching nobody joins until the whole running batch has finished, and a new batch
   waits up to ``static_wait_ms`` from its first request to fill (the classic scheme, kept to
   compare).
2. **step** — one token for every running sequence: one forward pass over the batch, then each
   sequence's own sampler (:mod:`workers.core.sampling`).
3. **leave** — sequences that produced their end-of-sequence token, a stop sequence, their last
   allowed token, or passed their request's deadline leave the batch at once; a request whose
   sequences have all ended gets its final result.
4. **sync** — every ``stream_interval_ms``: the text so far of every running request is written
   to Redis (a poll shows it growing), chunks go to the outlet (Kafka stream), and the stop flags
   clients set with cancel are read; a cancelled request ends ``cancelled`` with its text so far.

A request that passes its deadline mid-way ends ``expired`` with its text so far. A failure in a
forward pass fails the sequences of that pass (the batch is rebuilt from nothing), never the
process. Times are in ms unless a name says ``_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from schemas.errors import Cancelled, DeadlineExpired, InferqError, InvalidRequest, ModelError
from schemas.messages import FinishReason, GenerationOutput, InferenceResult, ResultStatus, now_ms
from schemas.observer import Observer, StepStats
from schemas.work import WorkItem
from workers.core.cache import CacheKeys, decode_output, encode_output
from workers.core.chunking import ChunkSizer
from workers.core.jobs import PRIORITY_RANK, Job, distinct, start_jobs, write_results
from workers.core.loop import Outlet
from workers.core.runners.causal import CausalLM, KVBatch, Prefill
from workers.core.sampling import Sampler, StopText, pick_tokens
from workers.core.sequences import Chunk, DecodePolicy, Seq
from workers.store.cache import ResultCache
from workers.store.store import TRANSIENT_ERRORS, ResultStore

log = logging.getLogger(__name__)

# how each kind of end shows in the request's status
_ENDS = {
    FinishReason.DEADLINE: (ResultStatus.EXPIRED, DeadlineExpired),
    FinishReason.CANCELLED: (ResultStatus.CANCELLED, Cancelled),
}


class Decoder:
    """Iteration-level batching of one causal LM on a dedicated thread."""

    def __init__(
        self,
        runner: CausalLM,
        store: ResultStore,
        policy: DecodePolicy,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = now_ms,
        observer: Observer | None = None,
        outlet: Outlet | None = None,
        cache: ResultCache | None = None,
        cache_keys: CacheKeys | None = None,
    ) -> None:
        """``clock`` (seconds) paces the syncs; ``wall_ms`` (epoch ms) dates timings and judges
        deadlines. ``outlet`` gets the requests refused before running (poison, prompt too long)
        and the new text of requests with ``stream_to_kafka``. ``cache``/``cache_keys``: the result
        cache, for deterministic requests (greedy, or seeded): hits never join the batch."""
        self.runner = runner
        self.cache = cache
        self.cache_keys = cache_keys
        self.store = store
        self.policy = policy
        self.max_attempts = max_attempts
        self._clock = clock
        self._wall_ms = wall_ms
        self.observer = observer or Observer()
        self.outlet = outlet or Outlet()
        self._waiting: list[deque[Seq]] = [deque() for _ in PRIORITY_RANK]
        self._running: list[Seq] = []
        self._joining: list[Seq] = []  # taken from the queue, not yet running (a failure ends them too)
        self._kv: KVBatch | None = None
        self.chunks = ChunkSizer(policy.prefill_chunk_tokens, policy.prefill_stall_steps)
        self._prefill: tuple[list[Seq], Prefill] | None = None  # joiners part-way through their prefill
        self._seqs: dict[Job, list[Seq]] = {}  # each job's sequences
        self._cond = threading.Condition()
        self._closed = False
        self._synced_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"decoder-{runner.name}", daemon=True)
        self._thread.start()

    # -- callers' side --------------------------------------------------------------------
    def submit(self, items: Sequence[WorkItem], first_delivery: bool = False) -> list[Job]:
        """Tokenise (on the caller's thread) and queue; returns one job per request.

        ``first_delivery`` changes nothing here: joiners are marked ``running`` before their
        prefill, which is short next to decoding."""
        jobs = Job.new(items, first_delivery)
        for job in jobs:
            request = job.request
            try:
                prompts = self.runner.prompts(request)
            except InvalidRequest as e:
                self._reject(job, e)
                continue
            except Exception as e:  # the tokenizer failed on it: this request fails, the others go on
                log.exception("could not tokenise request %s", request.request_id)
                self._reject(job, ModelError(f"the prompt could not be tokenised: {e!r}"[:300]))
                continue
            seqs, error = self._sequences(job, prompts)
            if error is not None:
                self._reject(job, error)
                continue
            with self._cond:
                self._seqs[job] = seqs
                for s in seqs:
                    s.queued_s = self._clock()
                self._waiting[PRIORITY_RANK[request.priority]].extend(seqs)
                self._cond.notify()
        return jobs

    def _sequences(self, job: Job, prompts: list[list[int]]) -> tuple[list[Seq], InferqError | None]:
        params, p = job.request.generation_params(), self.policy
        seqs = []
        for i, prompt in enumerate(prompts):
            limit = min(p.max_prompt_tokens, self.runner.max_context_tokens - 1)
            if len(prompt) > limit:
                what = (
                    "the conversation, rendered with the chat template,"
                    if job.request.messages is not None
                    else f"inputs[{i}]"
                )
                return [], InvalidRequest(
                    f"{what} is {len(prompt)} tokens; the limit is {limit}",
                    hint="shorten the prompt (INFERQ_GENERATE_MAX_PROMPT_TOKENS sets the limit)",
                )
            budget = min(
                params.max_new_tokens, p.max_new_tokens, self.runner.max_context_tokens - len(prompt)
            )
            sampler, stops = Sampler.for_request(params, i), StopText(params.stop)
            seqs.append(Seq(job, i, prompt, budget, sampler, stops, params.stream_to_kafka))
        if self.cache_keys is not None:
            limits = [f"budget={s.budget}" for s in seqs]
            for s, key in zip(seqs, self.cache_keys.keys(job.request, prompts, limits), strict=True):
                s.key = key
        return seqs, None

    def _reject(self, job: Job, error: InferqError) -> None:
        job.finish(ResultStatus.FAILED, error)
        try:
            self.outlet.refused(job)
        except Exception:  # the failed result is still written; the letter is best effort
            log.exception("the outlet failed on refused request %s", job.request.request_id)
        self._write([job])

    @property
    def version(self) -> str:
        """The served model's version (``<model>@<digest>``), stamped on its results."""
        return str(self.runner.version)

    def warm_up(self) -> None:
        """A prefill and a decode step (on the caller's thread, before any request arrives)."""
        prompts = self.runner.tokenize(["warm up", "a longer warm up prompt"])
        _, kv = self.runner.prefill(prompts)
        self.runner.decode(kv, [p[-1] for p in prompts])
        if self.policy.prefill_chunk_tokens and self.policy.prefill_stall_steps:
            self.chunks.calibrate(self._time_prefill)

    def _time_prefill(self, rows: int, columns: int) -> float:
        """ms of one prefill of ``rows`` prompts of ``columns`` tokens (the chunk sizer's calibration)."""
        # any id in the vocabulary but an end of sequence (GPT-2's is the last id), never past the context
        token = next(t for t in range(self.runner.vocab_size) if t not in self.runner.eos_ids)
        columns = max(1, min(columns, self.runner.max_context_tokens - 1))
        started = self._clock()
        self.runner.prefill([[token] * columns] * rows)
        self.runner.synchronize()
        return (self._clock() - started) * 1e3

    def close(self, timeout_s: float = 60.0) -> None:
        """Finish what runs and waits, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._busy() and not self._closed:
                    self._cond.wait(1.0)
                if self._closed and not self._busy():
                    return
                fill_s = self._fill_wait_s()
                if fill_s > 0:  # static: let the next batch fill (an arrival re-checks at once)
                    self._cond.wait(fill_s)
                    continue
            try:
                joined = self._join()
                if self._running:
                    self._step(joined)
                self._sync()
            except TRANSIENT_ERRORS:  # Redis gone past the retries: hand the messages back
                log.exception("result store unreachable; the running requests go back to the queue")
                self._abandon(unwritten=True)
            except Exception as e:  # never let one step kill the model thread
                log.exception("decode step failed; its requests are failed")
                self._abandon(error=ModelError(f"generation failed in the model: {e!r}"))

    def _fill_wait_s(self) -> float:
        """Static batching between batches: how much longer (s) to wait for the next batch to fill
        (up to ``max_running`` sequences or the KV budget), counted from its oldest waiting
        sequence's arrival; 0 = start it now: closing, or a waiting request's deadline would pass
        before the wait is up. Called holding the condition."""
        p = self.policy
        if not p.static or p.static_wait_ms <= 0 or self._closed:
            return 0.0
        if self._running or self._prefill is not None:
            return 0.0
        waiting = [s for queue in self._waiting for s in queue if s.finish is None]
        full = len(waiting) >= p.max_running or sum(s.reserve for s in waiting) >= p.max_batch_tokens
        if not waiting or full:
            return 0.0
        oldest = min(s.queued_s for s in waiting)
        wait_s = max(0.0, oldest + p.static_wait_ms / 1000.0 - self._clock())
        deadlines = [d for d in (s.job.request.deadline_ms() for s in waiting) if d is not None]
        if deadlines and min(deadlines) <= self._wall_ms() + wait_s * 1000.0:
            return 0.0  # waiting would expire a request that could still run
        return wait_s

    def _busy(self) -> bool:
        return bool(self._running) or self._prefill is not None or any(self._waiting)

    def _join(self) -> int:
        """Move waiting sequences into the running batch while there is room; returns how many."""
        if self._prefill is not None:
            return self._advance_prefill()
        if self.policy.static and self._running:
            return 0
        joiners = self._joining = self._take_waiting()
        if not joiners:
            return 0
        start = self._wall_ms()
        jobs = distinct(s.job for s in joiners)
        for job in jobs:  # a deadline that passed while it waited: no need to run it
            deadline = job.request.deadline_ms()
            if deadline is not None and deadline <= start and not job.finished:
                self._end_job(job, FinishReason.DEADLINE)
        fresh = [j for j in jobs if not j.started and not j.finished and self._pending(j)]
        for job in fresh:
            job.started, job.status = True, ResultStatus.RUNNING
            job.timings.update(batch_start_ms=start, batch_size=len(self._running) + len(joiners))
        for job in start_jobs(self.store, fresh, self._result, self.max_attempts):
            self._reject(job, job.error or ModelError("poison"))
        for job in fresh:
            if job.skipped:  # the store refused it: cancelled while queued, or already answered
                self._end_job(job, FinishReason.CANCELLED)
        self._from_cache([s for s in joiners if s.finish is None and not s.job.finished])
        self._complete(jobs)
        live = [s for s in joiners if s.finish is None and not s.job.finished]
        if not live:
            self._joining = []
            return 0
        self._prefill = (live, self.runner.begin_prefill([s.prompt for s in live]))
        return self._advance_prefill()

    def _advance_prefill(self) -> int:
        """Run the joiners' prefill, or its next chunk while others run; once it is whole, they
        join the running batch with their first token. Returns how many joined."""
        assert self._prefill is not None
        live, prefill = self._prefill
        columns = self.chunks.columns(
            prefill.rows, len(self._running), prefill.width - prefill.done, prefill.done
        )
        started = self._clock()
        logits = self.runner.prefill_chunk(prefill, columns)
        self.runner.synchronize()  # timed to the end of the pass, not of its launch
        self.chunks.observe_prefill(prefill.rows, columns, (self._clock() - started) * 1e3)
        if logits is None:
            return 0
        self._prefill = None
        kv = prefill.kv()
        self._kv = kv if self._kv is None else self._kv.join(kv)
        self._running += live
        self._joining = []
        self._accept(live, pick_tokens(logits, [s.sampler for s in live]))
        return len(live)

    def _from_cache(self, joiners: list[Seq]) -> None:
        """End the joiners the result cache answers (one MGET); they never reach the model."""
        keyed = [s for s in joiners if s.key is not None]
        if self.cache is None or not keyed:
            return
        values = self.cache.get_many(list(dict.fromkeys(s.key for s in keyed if s.key is not None)))
        found = {}
        for key, raw in zip(dict.fromkeys(s.key for s in keyed), values or [], strict=False):
            output = decode_output(raw) if raw is not None else None
            if isinstance(output, GenerationOutput) and output.finish_reason is not None:
                found[key] = output
        hits = [s for s in keyed if s.key in found]
        for s in hits:
            output = found[s.key]
            s.text, s.finish, s.cached_tokens = output.text, output.finish_reason, output.tokens
            s.sent = 0
            s.job.cached.append(s.index)
        self._emit(hits)  # a streamed request gets its whole text in one chunk
        errors = int(values is None)
        self.observer.cache_used(self.runner.name, len(hits), len(keyed) - len(hits), errors)

    def _remember(self, ended: Sequence[Seq]) -> None:
        """Put the outputs of sequences that ended on their own (eos, stop, budget) in the cache."""
        done = (FinishReason.EOS, FinishReason.STOP, FinishReason.LENGTH)
        fresh = {
            s.key: GenerationOutput(text=s.text, tokens=len(s.tokens), finish_reason=s.finish)
            for s in ended
            if s.key is not None and s.cached_tokens is None and s.finish in done
        }
        if self.cache is None or not fresh:
            return
        try:
            stored = self.cache.put_many({k: encode_output(o) for k, o in fresh.items()})
        except Exception:  # the cache never fails a request
            log.exception("could not put %d generations in the result cache", len(fresh))
            stored = False
        if not stored:
            self.observer.cache_used(self.runner.name, 0, 0, 1)

    def _pending(self, job: Job) -> bool:
        return any(s.finish is None for s in self._seqs.get(job, []))

    def _take_waiting(self) -> list[Seq]:
        """Highest priority first, in arrival order, within the sequence and token budgets. A lone
        sequence over the token budget still runs alone (nothing waits forever)."""
        p = self.policy
        room = p.max_batch_tokens - sum(s.reserve for s in self._running)
        taken: list[Seq] = []
        with self._cond:
            for queue in self._waiting:
                while queue and len(self._running) + len(taken) < p.max_running:
                    s = queue[0]
                    if s.finish is not None:  # its request ended while it waited
                        queue.popleft()
                        continue
                    if s.reserve > room and (self._running or taken):
                        return taken
                    taken.append(queue.popleft())
                    room -= s.reserve
        return taken

    def _step(self, joined: int) -> None:
        assert self._kv is not None
        started, rows = self._clock(), len(self._running)
        logits, self._kv = self.runner.decode(self._kv, [s.tokens[-1] for s in self._running])
        picks = pick_tokens(logits, [s.sampler for s in self._running])  # waits for the device
        self.chunks.observe_step((self._clock() - started) * 1e3)
        self._accept(self._running, picks)
        stats = StepStats(self.runner.name, rows, joined, (self._clock() - started) * 1e3)
        self.observer.step_done(stats)

    def _accept(self, seqs: Sequence[Seq], picks: Sequence[int]) -> None:
        """Append each sequence's new token; mark the ones that end (eos, stop, budget, deadline)."""
        now = self._wall_ms()
        for s, token in zip(seqs, picks, strict=True):
            if s.finish is not None:
                continue
            s.job.timings.setdefault("first_token_ms", now)
            if token in self.runner.eos_ids:
                s.finish = FinishReason.EOS
                continue
            s.tokens.append(token)
            s.text, stopped = s.stops.update(self.runner.detokenize(s.tokens))
            if stopped:
                s.finish = FinishReason.STOP
            elif len(s.tokens) >= s.budget:
                s.finish = FinishReason.LENGTH
        for job in distinct(s.job for s in seqs):
            deadline = job.request.deadline_ms()
            if deadline is not None and deadline <= now and not job.finished:
                self._end_job(job, FinishReason.DEADLINE)
        self._leave()

    def _leave(self) -> None:
        """Drop ended sequences from the batch; write the results of requests now complete."""
        keep = [i for i, s in enumerate(self._running) if s.finish is None]
        if len(keep) == len(self._running):
            return
        ended = [s for s in self._running if s.finish is not None]
        self._kv = self._kv.keep(keep) if keep and self._kv is not None else None
        self._running = [self._running[i] for i in keep]
        self._emit(ended)
        self._complete(distinct(s.job for s in ended))
        self._remember(ended)

    def _complete(self, jobs: Sequence[Job]) -> None:
        """Give each job whose sequences have all ended its terminal status, and write them."""
        complete = []
        for job in jobs:
            seqs = self._seqs.get(job, [])
            if job.done.is_set() or not all(s.finish is not None for s in seqs):
                continue
            if not job.finished:
                status, error = ResultStatus.DONE, None
                for reason, (st, cls) in _ENDS.items():
                    if any(s.finish is reason for s in seqs):
                        tokens = sum(s.generated for s in seqs)
                        status, error = (
                            st,
                            cls(f"{reason.value} after {tokens} generated tokens; text so far kept"),
                        )
                job.finish(status, error)
            complete.append(job)
        self._write(complete)

    def _end_job(self, job: Job, reason: FinishReason) -> None:
        """End every sequence of ``job`` that still runs or waits (deadline, cancel)."""
        for s in self._seqs.get(job, []):
            if s.finish is None:
                s.finish = reason

    # -- Redis and streams ----------------------------------------------------------------
    def _sync(self, force: bool = False) -> None:
        """Write the running requests' text so far and read their stop flags (every interval)."""
        now = self._clock()
        if not force and (now - self._synced_s) * 1000.0 < self.policy.stream_interval_ms:
            return
        self._synced_s = now
        jobs = distinct(s.job for s in self._running)
        if not jobs:
            return
        self._emit(self._running)
        flags = self.store.progress([self._result(j) for j in jobs])
        for job, flag in zip(jobs, flags, strict=True):
            if flag == "cancel":
                self._end_job(job, FinishReason.CANCELLED)
            elif flag == "gone":  # ended elsewhere (a duplicate delivery): drop it silently
                job.skipped = True
                self._end_job(job, FinishReason.CANCELLED)
        self._leave()

    def _emit(self, seqs: Sequence[Seq]) -> None:
        for s in seqs:
            if not s.stream or (s.sent == len(s.text) and s.finish is None):
                continue
            chunk = Chunk(s.job.request.request_id, s.index, s.text[s.sent :], s.generated, s.finish)
            s.sent = len(s.text)
            try:
                self.outlet.chunk(chunk)
            except Exception:  # a stream is best effort; the result in Redis is the record
                log.exception("the outlet failed on a chunk of %s", chunk.request_id)

    def _write(self, jobs: list[Job]) -> None:
        """Write terminal results (one round trip); a failed write hands the messages back."""
        try:
            write_results(self.store, jobs, self._result)
        finally:
            for j in jobs:
                self._forget(j)

    def _forget(self, job: Job) -> None:
        with self._cond:
            self._seqs.pop(job, None)
        job.done.set()

    def _abandon(self, *, error: InferqError | None = None, unwritten: bool = False) -> None:
        """After a failed step: end every running or joining request (failed, or handed back unwritten)."""
        jobs = [j for j in distinct(s.job for s in self._running + self._joining) if not j.done.is_set()]
        self._running, self._joining, self._kv, self._prefill = [], [], None, None
        for job in jobs:
            self._end_job(job, FinishReason.CANCELLED)
            job.unwritten = unwritten
            if error is not None and not unwritten:
                job.finish(ResultStatus.FAILED, error)
        if unwritten:
            for job in jobs:
                self._forget(job)
        else:
            self._write(jobs)

    def _result(self, job: Job) -> InferenceResult:
        seqs = self._seqs.get(job, [])  # built in input order
        outputs = [GenerationOutput(text=s.text, tokens=s.generated, finish_reason=s.finish) for s in seqs]
        kept = outputs if job.status is not ResultStatus.FAILED and outputs else None
        return job.result(self.runner.version, kept)
