"""The dispatcher's retry and give-up logic, with a fake outbox, fake sinks and fake clocks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from schemas.settings import Settings
from workers.delivery.dispatcher import Dispatcher
from workers.delivery.sink import Delivery, DeliveryFailed
from workers.store.outbox import Entry

T0_MS = 1_700_000_000_000
BODY = b'{"request_id":"r1","status":"done","trace_id":"0af7651916cd43dd8448eb211c80319c"}'


class FakeOutbox:
    def __init__(
        self, entries: Sequence[Entry] = (), abandoned: Sequence[Entry] = (), mine: Sequence[Entry] = ()
    ) -> None:
        self.new, self.abandoned, self.mine = list(entries), list(abandoned), list(mine)
        self.acked: list[str] = []
        self.touched: list[list[str]] = []

    def read(self, count: int, block_ms: int | None, *, mine: bool = False) -> list[Entry]:
        if mine:
            out, self.mine = self.mine[:count], self.mine[count:]
            return out
        out, self.new = self.new[:count], self.new[count:]
        return out

    def reclaim(self, count: int) -> list[Entry]:
        out, self.abandoned = self.abandoned[:count], self.abandoned[count:]
        return out

    def touch(self, entry_ids: Sequence[str]) -> None:
        self.touched.append(list(entry_ids))

    def done(self, entry_ids: Sequence[str]) -> None:
        self.acked += entry_ids


class FakeSink:
    """Fails the first ``fail`` tries of each target with ``error``, then sends."""

    def __init__(self, kind: str, fail: int = 0, error: DeliveryFailed | None = None) -> None:
        self.kind, self.fail, self.error = kind, fail, error
        self.sent: list[Delivery] = []
        self.tries: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        self.tries.append(delivery)
        if sum(d.target == delivery.target for d in self.tries) <= self.fail:
            raise self.error or DeliveryFailed("broker_unavailable", retryable=True)
        self.sent.append(delivery)

    def close(self) -> None:
        pass


class Report:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str, str, str]] = []

    def outcome(self, delivery: Delivery, sink: str, outcome: str, reason: str = "") -> None:
        self.outcomes.append((delivery.target, sink, outcome, reason))

    def flush(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s

    def wall_ms(self) -> float:
        return T0_MS + (self.s - 100.0) * 1000


def entry(n: int = 1, deliver: bytes = b'{"topics":["replies"]}', body: bytes | None = BODY) -> Entry:
    return Entry(f"{T0_MS}-{n}", f"acme~r{n}", body, deliver)


def dispatcher(outbox: FakeOutbox, sinks: dict, **settings: float) -> tuple[Dispatcher, Report, Clock]:
    clock, report = Clock(), Report()
    base = {"delivery_retry_initial_s": 1.0, "delivery_retry_max_s": 8.0, "delivery_max_s": 20.0}
    s = Settings.model_validate({**base, **settings})
    return Dispatcher(outbox, sinks, s, report, clock=clock, wall_ms=clock.wall_ms), report, clock


def run_until(d: Dispatcher, clock: Clock, outbox: FakeOutbox, seconds: float) -> None:
    """Steps, advancing the fake clock to each next due retry, until ``seconds`` have passed."""
    end = clock.s + seconds
    while clock.s < end:
        d.step(block_ms=0)
        dues = [t.due_s for h in d.held.values() for t in h.targets]
        clock.s = max(min(dues), clock.s + 0.001) if dues else end


def test_a_sent_result_is_acknowledged_once_with_the_stored_bytes_key_and_trace():
    outbox, kafka = FakeOutbox([entry()]), FakeSink("kafka")
    d, report, _ = dispatcher(outbox, {"kafka": kafka})
    assert d.step(block_ms=0) == 1
    (sent,) = kafka.sent
    assert (sent.request_id, sent.tenant, sent.target, sent.body) == ("r1", "acme", "replies", BODY)
    assert sent.trace_id == "0af7651916cd43dd8448eb211c80319c" and sent.attempt == 1
    assert outbox.acked == [f"{T0_MS}-1"] and not d.held
    assert report.outcomes == [("replies", "kafka", "sent", "")]


def test_a_retryable_failure_backs_off_exponentially_then_succeeds_with_the_same_body():
    outbox, kafka = FakeOutbox([entry()]), FakeSink("kafka", fail=3)
    d, report, clock = dispatcher(outbox, {"kafka": kafka})
    run_until(d, clock, outbox, 15)
    assert [t.attempt for t in kafka.tries] == [1, 2, 3, 4]
    assert {t.body for t in kafka.tries} == {BODY}  # the same content on every try
    assert [o[2] for o in report.outcomes] == ["retried", "retried", "retried", "sent"]
    assert [d.backoff_s(n) for n in (1, 2, 3, 4, 5, 50)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert outbox.acked == [f"{T0_MS}-1"]


def test_a_target_failing_past_the_bound_is_given_up_and_the_entry_acknowledged():
    outbox, kafka = FakeOutbox([entry()]), FakeSink("kafka", fail=10**6)
    d, report, clock = dispatcher(outbox, {"kafka": kafka})
    run_until(d, clock, outbox, 60)
    assert report.outcomes[-1] == ("replies", "kafka", "failed", "gave_up_broker_unavailable")
    assert all(o[2] == "retried" for o in report.outcomes[:-1])
    # tries at 0, 1, 3, 7 and 15 s (backoff 1, 2, 4, 8 s); the next would be at 23 s, past the 20 s bound
    assert len(kafka.tries) == 5
    assert outbox.acked == [f"{T0_MS}-1"] and not d.held


def test_a_failure_that_never_passes_is_given_up_at_once():
    refused = DeliveryFailed("topic_not_allowed", retryable=False)
    outbox, kafka = FakeOutbox([entry()]), FakeSink("kafka", fail=1, error=refused)
    d, report, _ = dispatcher(outbox, {"kafka": kafka})
    d.step(block_ms=0)
    assert report.outcomes == [("replies", "kafka", "failed", "topic_not_allowed")]
    assert outbox.acked == [f"{T0_MS}-1"] and len(kafka.tries) == 1


def test_an_entry_waits_for_all_its_targets_and_a_kind_without_a_sink_is_undeliverable():
    both = b'{"topics":["a","b"],"url":"https://h.example/x"}'
    outbox, kafka = FakeOutbox([entry(deliver=both)]), FakeSink("kafka", fail=1)
    d, report, clock = dispatcher(outbox, {"kafka": kafka})
    d.step(block_ms=0)
    assert ("https://h.example/x", "webhook", "failed", "no_webhook_sink") in report.outcomes
    assert outbox.acked == []  # topic a and b still to retry
    run_until(d, clock, outbox, 5)
    assert sorted(s.target for s in kafka.sent) == ["a", "b"]
    assert outbox.acked == [f"{T0_MS}-1"]


def test_a_result_gone_from_redis_and_an_entry_without_targets_are_finished_at_once():
    outbox = FakeOutbox([entry(1, body=None), entry(2, deliver=b"")])
    kafka = FakeSink("kafka")
    d, report, _ = dispatcher(outbox, {"kafka": kafka})
    d.step(block_ms=0)
    assert report.outcomes == [("replies", "kafka", "failed", "result_gone")]
    assert sorted(outbox.acked) == [f"{T0_MS}-1", f"{T0_MS}-2"] and not kafka.tries


def test_a_restarted_process_resumes_its_own_unfinished_entries_first():
    outbox = FakeOutbox([entry(2)], mine=[entry(1)])
    kafka = FakeSink("kafka")
    d, _, _ = dispatcher(outbox, {"kafka": kafka})
    d.step(block_ms=0)
    assert [t.request_id for t in kafka.sent] == ["r1", "r2"] and outbox.acked == [f"{T0_MS}-1", f"{T0_MS}-2"]


def test_abandoned_entries_are_taken_over_and_held_ones_kept_touched():
    outbox = FakeOutbox(abandoned=[entry(7)])
    kafka = FakeSink("kafka", fail=10**6)
    d, _, clock = dispatcher(outbox, {"kafka": kafka}, delivery_claim_idle_s=3.0)
    d.step(block_ms=0)
    assert kafka.tries[0].request_id == "r7" and f"{T0_MS}-7" in d.held
    clock.s += 1.5
    d.step(block_ms=0)
    assert outbox.touched == [[f"{T0_MS}-7"]]  # its idle time reset: nobody takes it from us


def test_a_full_dispatcher_reads_nothing_new():
    outbox = FakeOutbox(
        [Entry(f"{T0_MS}-{n}", f"t{n}~r{n}", BODY, b'{"topics":["replies"]}') for n in range(5)]
    )
    kafka = FakeSink("kafka", fail=10**6)
    d, _, _ = dispatcher(outbox, {"kafka": kafka}, delivery_batch_max_entries=2)
    d.step(block_ms=0)
    d.step(block_ms=0)
    assert len(d.held) == 2 and len(outbox.new) == 3


class SlowHooks:
    """A concurrent sink: tries to ``slow.example`` block until ``release`` is set; others send."""

    kind = "webhook"
    concurrent = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def send(self, delivery: Delivery) -> None:
        with self.lock:
            self.started.append(delivery.target)
        if "slow.example" in delivery.target:
            assert self.release.wait(10)
        with self.lock:
            self.sent.append(delivery.target)

    def close(self) -> None:
        self.release.set()


def hook(n: int, host: str) -> Entry:
    return entry(n, deliver=b'{"topics":["replies"],"url":"https://%s/h%d"}' % (host.encode(), n))


def settle(d: Dispatcher, until: Callable[[], bool]) -> None:
    give_up = time.monotonic() + 10
    while not until():
        assert time.monotonic() < give_up, "the dispatcher never settled"
        d.step(block_ms=0)
        time.sleep(0.005)


def test_a_slow_receiver_holds_neither_the_round_nor_other_hosts_deliveries():
    outbox = FakeOutbox([hook(1, "slow.example"), hook(2, "fast.example")])
    kafka, hooks = FakeSink("kafka"), SlowHooks()
    d, report, _ = dispatcher(outbox, {"kafka": kafka, "webhook": hooks})
    try:
        d.step(block_ms=0)  # returns while the slow try is under way
        assert len(kafka.sent) == 2  # both results on their topics at once
        settle(d, lambda: outbox.acked == [f"{T0_MS}-2"])  # the fast host's entry finished
        assert [o for o in report.outcomes if o[1] == "webhook"] == [
            ("https://fast.example/h2", "webhook", "sent", "")
        ]
        hooks.release.set()
        settle(d, lambda: len(outbox.acked) == 2)
        assert ("https://slow.example/h1", "webhook", "sent", "") in report.outcomes
    finally:
        hooks.release.set()
        d.close()


def test_one_host_gets_a_bounded_share_of_the_tries_under_way():
    per_host = 2
    outbox = FakeOutbox([hook(n, "slow.example") for n in range(20)] + [hook(99, "fast.example")])
    hooks = SlowHooks()
    d, _, _ = dispatcher(
        outbox,
        {"kafka": FakeSink("kafka"), "webhook": hooks},
        delivery_max_per_host=per_host,
        delivery_batch_max_entries=64,
    )
    try:
        settle(d, lambda: f"{T0_MS}-99" in outbox.acked)  # the other host's entry went through
        slow = [t for t in hooks.started if "slow.example" in t]
        assert len(slow) == per_host  # no more tries under way to one host
        assert len(d.held) == 20  # the rest wait their turn, held (a healthy busy host is not shed)
    finally:
        hooks.release.set()
        d.close()


class DownFor:
    """Fails every try of the targets in ``down`` (retryable), sends the others."""

    kind = "kafka"

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.sent: list[Delivery] = []

    def send(self, delivery: Delivery) -> None:
        if delivery.target in self.down:
            raise DeliveryFailed("timeout", retryable=True)
        self.sent.append(delivery)

    def close(self) -> None:
        pass


def test_one_tenants_failing_targets_never_fill_the_dispatcher_for_the_others():
    """A tenant whose targets never answer (a black-holed callback, a topic that times out) used to
    fill every slot with entries backing off until ``delivery_max_s``: nobody else's result was
    read for that long. A tenant may keep at most half the slots backing off; the rest of its
    entries are left pending (taken over again later) and the others' results flow."""
    bad = b'{"topics":["mallory.out"]}'
    mallory = [Entry(f"{T0_MS}-{n}", f"mallory~m{n}", BODY, bad) for n in range(1, 9)]
    victim = Entry(f"{T0_MS}-99", "acme~r99", BODY, b'{"topics":["acme.out"]}')
    outbox = FakeOutbox([*mallory, victim])
    sink = DownFor({"mallory.out"})
    d, _, clock = dispatcher(outbox, {"kafka": sink}, delivery_batch_max_entries=4, delivery_max_s=600.0)
    run_until(d, clock, outbox, 30)
    assert [s.request_id for s in sink.sent] == ["r99"]
    assert sum(1 for h in d.held.values() if h.entry.sid.startswith("mallory~")) <= 2


def test_a_tenants_entry_past_its_delivery_bound_is_taken_for_its_last_try_even_over_its_share():
    """Entries left pending over a tenant's share are not deferred for ever: once past
    ``delivery_max_s`` one is taken again, tried once and given up (the backlog drains)."""
    bad = b'{"topics":["mallory.out"]}'
    mallory = [Entry(f"{T0_MS}-{n}", f"mallory~m{n}", BODY, bad) for n in range(1, 4)]
    outbox = FakeOutbox(mallory)
    d, report, clock = dispatcher(outbox, {"kafka": DownFor({"mallory.out"})}, delivery_batch_max_entries=4)
    d.step(block_ms=0)  # three tries failed: mallory keeps its share (2 of 4) and lets one go
    assert sorted(d.held) == [f"{T0_MS}-1", f"{T0_MS}-2"] and not outbox.acked
    outbox.abandoned = [mallory[2]]  # left untouched, it went idle: taken over again later
    clock.s += 25  # past delivery_max_s (20 s)
    d.step(block_ms=0)
    assert [o for o in report.outcomes if o[2] == "failed"] == [
        ("mallory.out", "kafka", "failed", "gave_up_timeout")
    ] * 3
    assert sorted(outbox.acked) == [e.entry_id for e in mallory]
