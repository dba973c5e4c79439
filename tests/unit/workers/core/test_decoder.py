"""Continuous batching on a tiny config-built causal LM (tests/tiny_models.py) with the fake store.

Joins and leaves are made deterministic by acting from the decoder's own step hook: a request
submitted there joins at the very next iteration. Every greedy output is checked token for token
against the same prompt decoded alone without padding, so left padding, the KV joins and the
row removals are shown not to change what a sequence computes.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import torch

from schemas.errors import ErrorCode
from schemas.messages import FinishReason, InferenceRequest, ResultStatus, now_ms
from schemas.observer import Observer, StepStats
from schemas.work import WorkItem
from tests.fakes import FakeStore
from tests.tiny_models import tiny_causal_lm
from workers.core.decoder import Decoder
from workers.core.loop import Outlet
from workers.core.runners.causal import CausalLM
from workers.core.sequences import Chunk, DecodePolicy

PROMPTS = ["the weather in lisbon is", "i want to talk to a human", "reset my password", "a"]


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return tiny_causal_lm()


def alone(lm: CausalLM, prompt: str, n: int) -> list[int]:
    """Greedy continuation of one prompt, no batch, no padding: the reference."""
    ids = torch.tensor([lm.tokenize([prompt])[0]])
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(n):
            token = int(lm.model(input_ids=ids).logits[0, -1].argmax())
            if token in lm.eos_ids:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return out


def gen(prompt: str | list[str], **params) -> InferenceRequest:
    return InferenceRequest(task="generate", model="tiny-lm", inputs=prompt, generation=params)


class Steps(Observer):
    """Calls each tap with every decode step's stats."""

    def __init__(self) -> None:
        self.taps: list = []

    def step_done(self, stats: StepStats) -> None:
        for tap in list(self.taps):
            tap(stats)


def taps_of(d):
    """The step taps of a decoder built with a :class:`Steps` observer."""
    return d.observer.taps


def work(request: InferenceRequest) -> WorkItem:
    return WorkItem(request=request)


class Collected(Outlet):
    """What a decoder hands its outlet: refused jobs and stream chunks."""

    def __init__(self) -> None:
        self.refusals: list = []
        self.chunks: list[Chunk] = []

    def refused(self, job) -> None:
        self.refusals.append(job)

    def chunk(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)


def decoder(lm, store=None, outlet=None, **policy) -> tuple[Decoder, FakeStore, list[StepStats]]:
    store = store or FakeStore()
    taps = Steps()
    d = Decoder(
        lm, store, DecodePolicy(**{"stream_interval_ms": 0.0, **policy}), observer=taps, outlet=outlet
    )
    steps: list[StepStats] = []
    taps.taps.append(steps.append)
    return d, store, steps


def tokens_of(lm: CausalLM, text: str) -> list[int]:
    return lm.tokenize([text])[0][1:]  # without the BOS token


def wait(jobs, timeout_s=60):
    for j in jobs:
        assert j.done.wait(timeout_s), "decoder did not finish in time"


def test_requests_join_and_leave_mid_batch_and_compute_what_they_would_alone(lm):
    d, store, steps = decoder(lm)
    reqs = [
        gen(PROMPTS[0], max_new_tokens=30),
        gen(PROMPTS[1], max_new_tokens=8),
        gen(PROMPTS[2], max_new_tokens=20),
    ]
    later: list = []

    def join_later(stats: StepStats) -> None:  # B joins after A's 3rd step, C after the 6th
        if len(steps) in (3, 6):
            later.extend(d.submit([work(reqs[len(later) + 1])]))

    taps_of(d).append(join_later)
    jobs = d.submit([work(reqs[0])])
    wait(jobs)
    wait(later)
    d.close()
    running = [s.running for s in steps]
    assert max(running) == 3 and running[0] == 1 and running[-1] == 1  # joined mid-batch, left early
    assert [s.joined for s in steps if s.joined] == [1, 1, 1]  # A, then B and C between two steps
    for r, n in zip(reqs, (30, 8, 20), strict=True):
        out = store.results[r.request_id]
        assert out.status is ResultStatus.DONE
        (o,) = out.outputs
        assert o.tokens == n and o.finish_reason is FinishReason.LENGTH
        assert tokens_of(lm, o.text) == alone(lm, r.inputs, n)[: len(tokens_of(lm, o.text))]
        assert o.text == lm.detokenize(alone(lm, r.inputs, n))
        assert out.timings.first_token_ms is not None
    # B left the batch while A and C were still running: A's text was unaffected by its leaving
    assert (
        store.results[reqs[1].request_id].timings.done_ms < store.results[reqs[0].request_id].timings.done_ms
    )


def test_static_batching_makes_a_newcomer_wait_for_the_whole_batch(lm):
    d, store, steps = decoder(lm, static=True)
    a, b = gen(PROMPTS[0], max_new_tokens=20), gen(PROMPTS[1], max_new_tokens=5)
    later: list = []
    taps_of(d).append(lambda st: later.extend(d.submit([work(b)])) if len(steps) == 2 else None)
    wait(d.submit([work(a)]))
    wait(later)
    d.close()
    assert max(s.running for s in steps) == 1
    ra, rb = store.results[a.request_id], store.results[b.request_id]
    assert rb.timings.first_token_ms >= ra.timings.done_ms
    assert rb.outputs[0].text == lm.detokenize(alone(lm, b.inputs, 5))


def test_a_stop_sequence_ends_the_text_before_it(lm):
    full = lm.detokenize(alone(lm, PROMPTS[2], 24))
    stop = full.split()[3]  # a word in the middle of the greedy continuation
    d, store, _ = decoder(lm)
    r = gen(PROMPTS[2], max_new_tokens=24, stop=[stop, "never-produced"])
    wait(d.submit([work(r)]))
    d.close()
    (o,) = store.results[r.request_id].outputs
    assert o.finish_reason is FinishReason.STOP
    assert o.text == full[: full.index(stop)] and stop not in o.text
    assert o.tokens < 24


def test_the_text_grows_in_the_store_while_it_runs_and_chunks_add_up(lm):
    outlet = Collected()
    d, store, _ = decoder(lm, outlet=outlet)
    chunks = outlet.chunks
    r = gen([PROMPTS[0], PROMPTS[3]], max_new_tokens=12, stream_to_kafka=True)
    wait(d.submit([work(r)]))
    d.close()
    partial = [p for p in store.progressed if p.request_id == r.request_id]
    assert all(p.status is ResultStatus.RUNNING for p in partial)
    lengths = [p.outputs[0].tokens for p in partial]
    assert lengths == sorted(lengths) and 0 < lengths[0] < 12  # seen growing, before the end
    final = store.results[r.request_id]
    assert [o.text for o in final.outputs] == [
        lm.detokenize(alone(lm, p, 12)) for p in (PROMPTS[0], PROMPTS[3])
    ]
    for index, o in enumerate(final.outputs):
        mine = [c for c in chunks if c.index == index]
        assert "".join(c.text for c in mine) == o.text
        assert mine[-1].finish_reason is FinishReason.LENGTH and all(
            c.finish_reason is None for c in mine[:-1]
        )


def test_cancel_mid_way_keeps_the_text_so_far_and_frees_the_slot(lm):
    d, store, _ = decoder(lm)
    victim, other = gen(PROMPTS[0], max_new_tokens=200), gen(PROMPTS[1], max_new_tokens=40)
    store.cancel_after_tokens[victim.request_id] = 5
    wait(d.submit([work(victim), work(other)]))
    d.close()
    res = store.results[victim.request_id]
    assert res.status is ResultStatus.CANCELLED and res.error.code is ErrorCode.CANCELLED
    (o,) = res.outputs
    assert o.finish_reason is FinishReason.CANCELLED and 5 <= o.tokens < 200
    assert o.text == lm.detokenize(alone(lm, PROMPTS[0], o.tokens))
    assert store.results[other.request_id].status is ResultStatus.DONE  # its neighbour carried on
    assert store.results[other.request_id].outputs[0].tokens == 40


def test_a_deadline_mid_way_ends_expired_with_the_text_so_far(lm):
    clock = {"skew_ms": 0.0}
    store = FakeStore()
    d = Decoder(
        lm,
        store,
        DecodePolicy(stream_interval_ms=0.0),
        wall_ms=lambda: now_ms() + clock["skew_ms"],
        observer=Steps(),
    )
    steps: list[StepStats] = []

    def jump(stats: StepStats) -> None:  # after 6 steps, time jumps an hour ahead
        steps.append(stats)
        if len(steps) == 6:
            clock["skew_ms"] = 3_600_000.0

    taps_of(d).append(jump)
    late = gen(PROMPTS[0], max_new_tokens=300)
    late = late.model_copy(update={"deadline": datetime.now(timezone.utc) + timedelta(minutes=30)})
    wait(d.submit([work(late)]))
    d.close()
    res = store.results[late.request_id]
    assert res.status is ResultStatus.EXPIRED and res.error.code is ErrorCode.DEADLINE_EXPIRED
    assert res.outputs[0].finish_reason is FinishReason.DEADLINE and 0 < res.outputs[0].tokens < 300


def test_a_past_deadline_never_reaches_the_model(lm):
    d, store, steps = decoder(lm)
    r = gen(PROMPTS[0]).model_copy(update={"deadline": datetime.now(timezone.utc) - timedelta(seconds=1)})
    wait(d.submit([work(r)]))
    d.close()
    assert store.results[r.request_id].status is ResultStatus.EXPIRED and not steps


def test_a_prompt_over_the_limit_fails_alone_and_is_rejected(lm):
    outlet = Collected()
    d, store, _ = decoder(lm, outlet=outlet, max_prompt_tokens=8)
    rejected = outlet.refusals
    long, fine = gen("one two three four five six seven eight nine"), gen("short", max_new_tokens=4)
    wait(d.submit([work(long), work(fine)]))
    d.close()
    res = store.results[long.request_id]
    assert res.status is ResultStatus.FAILED and res.error.code is ErrorCode.VALIDATION_ERROR
    assert "the limit is 8" in res.error.message
    assert [j.request.request_id for j in rejected] == [long.request_id]
    assert store.results[fine.request_id].status is ResultStatus.DONE


def test_the_token_budget_admits_what_fits_and_a_lone_oversized_sequence_still_runs(lm):
    d, store, steps = decoder(lm, max_batch_tokens=40)
    reqs = [gen(PROMPTS[i], max_new_tokens=30) for i in range(3)]  # each reserves > 30 tokens
    wait(d.submit([work(r) for r in reqs]))
    d.close()
    assert max(s.running for s in steps) == 1
    assert all(store.results[r.request_id].outputs[0].tokens == 30 for r in reqs)
    d, store, steps = decoder(lm, max_batch_tokens=16)  # smaller than any one sequence
    r = gen(PROMPTS[0], max_new_tokens=30)
    wait(d.submit([work(r)]))
    d.close()
    assert store.results[r.request_id].status is ResultStatus.DONE


def test_seeded_sampling_repeats_whatever_shares_the_batch(lm):
    texts = []
    for neighbours in (0, 3):
        d, store, _ = decoder(lm)
        r = gen(PROMPTS[0], max_new_tokens=16, temperature=0.9, top_p=0.95, seed=123)
        others = [gen(PROMPTS[1], max_new_tokens=10, temperature=1.0) for _ in range(neighbours)]
        wait(d.submit([work(x) for x in [*others, r]]))
        d.close()
        texts.append(store.results[r.request_id].outputs[0].text)
    assert texts[0] == texts[1] and texts[0]


def test_a_failing_step_fails_its_requests_and_the_decoder_goes_on(lm, monkeypatch):
    d, store, _ = decoder(lm)
    real = lm.decode
    calls = {"n": 0}

    def flaky(batch, tokens):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("kernel exploded")
        return real(batch, tokens)

    monkeypatch.setattr(lm, "decode", flaky)
    first = gen(PROMPTS[0], max_new_tokens=10)
    wait(d.submit([work(first)]))
    after = gen(PROMPTS[1], max_new_tokens=4)
    wait(d.submit([work(after)]))
    d.close()
    res = store.results[first.request_id]
    assert res.status is ResultStatus.FAILED and res.error.code is ErrorCode.MODEL_ERROR
    assert store.results[after.request_id].status is ResultStatus.DONE


def test_redis_gone_while_joining_hands_the_requests_back_unwritten(lm):
    import redis

    class FlakyStore(FakeStore):
        failed = False

        def start(self, results):
            if not self.failed:
                self.failed = True
                raise redis.ConnectionError("Redis restarting")
            return super().start(results)

    store = FlakyStore()
    d = Decoder(lm, store, DecodePolicy(stream_interval_ms=0.0))
    first = gen(PROMPTS[0], max_new_tokens=5)
    (job,) = d.submit([work(first)])
    assert job.done.wait(30) and job.unwritten  # the Celery task puts its message back
    second = gen(PROMPTS[1], max_new_tokens=5)
    wait(d.submit([work(second)]))
    d.close()
    assert store.results[second.request_id].status is ResultStatus.DONE


def test_a_static_batch_waits_to_fill_and_starts_as_soon_as_it_is_full(lm):
    d, _, steps = decoder(lm, static=True, static_wait_ms=30_000.0, max_running=2)
    a, b = gen(PROMPTS[0], max_new_tokens=4), gen(PROMPTS[1], max_new_tokens=4)
    first = d.submit([work(a)])
    assert not first[0].done.wait(0.3) and not steps  # alone, it waits for a second request
    jobs = first + d.submit([work(b)])
    wait(jobs, timeout_s=20)  # full at two: it starts long before the 30 s wait is up
    d.close()
    assert steps[0].running == 2 and max(s.running for s in steps) == 2


def test_a_static_batch_that_does_not_fill_starts_when_its_wait_is_up(lm):
    d, store, steps = decoder(lm, static=True, static_wait_ms=200.0, max_running=8)
    a = gen(PROMPTS[0], max_new_tokens=3)
    submitted_ms = now_ms()
    wait(d.submit([work(a)]))
    d.close()
    assert steps[0].running == 1
    # it waited (most of) the 200 ms for company, then ran alone
    assert store.results[a.request_id].timings.batch_start_ms - submitted_ms >= 190


def test_continuous_batching_never_waits_to_fill(lm):
    d, store, steps = decoder(lm, static_wait_ms=30_000.0, max_running=8)
    a = gen(PROMPTS[0], max_new_tokens=3)
    wait(d.submit([work(a)]), timeout_s=20)
    d.close()
    assert store.results[a.request_id].status is ResultStatus.DONE and steps[0].running == 1


def test_warm_up_calibrates_the_prefill_chunks_and_chunks_stay_within_their_cap(lm):
    d, store, steps = decoder(lm, prefill_chunk_tokens=4, prefill_stall_steps=2.0)
    d.warm_up()
    assert d.chunks.cost.rates() is not None  # the first chunk is sized by a fitted model
    running = gen(PROMPTS[3], max_new_tokens=30)
    long = gen(" ".join(["word"] * 40), max_new_tokens=2)
    later: list = []
    taps_of(d).append(lambda st: later.extend(d.submit([work(long)])) if len(steps) == 2 else None)
    wait(d.submit([work(running)]))
    wait(later)
    d.close()
    joined_at = next(i for i, s in enumerate(steps) if s.joined and i > 0)
    assert joined_at - 2 >= 40 // 4 - 1  # chunks of at most 4 tokens: ten or more steps in between
    assert store.results[long.request_id].outputs[0].text == lm.detokenize(alone(lm, long.inputs, 2))


def test_a_static_batch_does_not_wait_to_fill_past_a_waiting_requests_deadline(lm):
    d, store, _ = decoder(lm, static=True, static_wait_ms=30_000.0, max_running=8)
    soon = datetime.now(timezone.utc) + timedelta(seconds=5)
    r = gen(PROMPTS[0], max_new_tokens=3).model_copy(update={"deadline": soon})
    wait(d.submit([work(r)]), timeout_s=20)  # the wait would expire it: it starts at once instead
    d.close()
    assert store.results[r.request_id].status is ResultStatus.DONE


def test_closing_does_not_wait_for_a_static_batch_to_fill(lm):
    d, store, _ = decoder(lm, static=True, static_wait_ms=30_000.0, max_running=8)
    r = gen(PROMPTS[0], max_new_tokens=3)
    jobs = d.submit([work(r)])
    started = time.monotonic()
    d.close(timeout_s=60)
    assert time.monotonic() - started < 10 and jobs[0].done.is_set()
    assert store.results[r.request_id].status is ResultStatus.DONE


def test_warm_up_calibrates_a_model_whose_end_of_sequence_is_its_last_id(lm):
    # GPT-2's end of sequence is the last id of its vocabulary: the calibration prompts must not use id + 1
    last = CausalLM("eos-last", lm.model, lm.tokenizer, lm._device, "eos-last@x", bos_id=lm.bos_id,
                    eos_ids=[lm.vocab_size - 1])  # fmt: skip
    d, _, _ = decoder(last)
    try:
        d.warm_up()
    finally:
        d.close()
    assert d.chunks.cost.rates() is not None
