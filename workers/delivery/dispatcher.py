"""The delivery service's core: take outbox entries, send each result to its targets, retry what
failed with exponential backoff, give up after a bound, acknowledge what is finished.

One entry is one terminal result and its targets (Kafka topics, a webhook URL). An entry is
acknowledged (and deleted from the outbox) once every target is delivered or given up; until then
it stays pending in the consumer group, so if this process dies another takes it over and sends
it again (:mod:`workers.store.outbox`). The body sent is the stored result exactly (the same bytes
on every try and from every process), so a reader that dedups on the key sees one content.

A target is given up when its sink says it never will succeed (``DeliveryFailed(retryable=False)``)
or when the next try would fall past ``delivery_max_s`` after the result became terminal (the
stream id's time, so the bound holds across process restarts). Every outcome is counted
(``inferq_deliveries{sink,outcome}``); a target given up is also an ECS record
(``event.dataset: inferq.delivery``). Nothing here touches the Redis result.

Sinks that declare ``concurrent = True`` (webhooks: one HTTP try each, up to its total timeout) are
not waited on: their tries run on a pool of ``delivery_concurrency`` threads, at most
``delivery_max_per_host`` at once per callback host, and are settled in a later round. So a slow
receiver holds a few threads, not the round, nor the Kafka deliveries and the other hosts' tries.

One tenant may hold at most half the slots with entries backing off; the rest of its entries wait
pending in the outbox (taken over again once idle), so targets that never answer cannot keep
every other tenant's results unread until ``delivery_max_s``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from schemas.naming import unscoped_id
from schemas.replies import Targets
from schemas.settings import Settings
from workers.delivery.sink import Delivery, DeliveryFailed, Sink
from workers.store.outbox import Entry

log = logging.getLogger(__name__)

# the result's trace id, as the result JSON writes it (a quote inside a string is escaped, so the
# unescaped pattern is the field itself)
_TRACE_ID = re.compile(rb'"trace_id":"([0-9a-f]{32})"')


class OutboxLike(Protocol):
    """What the dispatcher needs of :class:`workers.store.outbox.Outbox` (a fake in unit tests)."""

    def read(self, count: int, block_ms: int | None, *, mine: bool = False) -> list[Entry]: ...

    def reclaim(self, count: int) -> list[Entry]: ...

    def touch(self, entry_ids: Sequence[str]) -> None: ...

    def done(self, entry_ids: Sequence[str]) -> None: ...


class DeliveryReport(Protocol):
    """Told of every outcome (metrics and ECS records in the service; a list in tests)."""

    def outcome(self, delivery: Delivery, sink: str, outcome: str, reason: str = "") -> None: ...

    def flush(self) -> None:
        """The outcomes of one round are all told: write what was gathered (metrics)."""


@dataclass
class Target:
    """One target of one held entry: its sink kind, address and tries so far."""

    kind: str
    address: str
    attempts: int = 0
    due_s: float = 0.0  # monotonic seconds: when to try next


@dataclass
class Held:
    """An entry this process holds until all its targets are finished."""

    entry: Entry
    targets: list[Target] = field(default_factory=list)

    @property
    def tenant(self) -> str | None:
        return unscoped_id(self.entry.sid)[0]

    @property
    def backing_off(self) -> bool:
        """Whether a try of it failed and it waits to try again (none of its tries under way: an
        entry with a try under way is never let go, or its outcome would be settled on nothing)."""
        return all(t.due_s != math.inf for t in self.targets) and any(t.attempts > 0 for t in self.targets)

    def delivery(self, target: Target) -> Delivery:
        tenant, request_id = unscoped_id(self.entry.sid)
        body = self.entry.body or b""
        trace = _TRACE_ID.findall(body)
        return Delivery(
            request_id=request_id,
            tenant=tenant,
            target=target.address,
            body=body,
            attempt=target.attempts,
            trace_id=trace[-1].decode() if trace else None,
        )


def failure_of(error: BaseException | None, kind: str) -> DeliveryFailed | None:
    """A try's outcome as :meth:`Dispatcher._settle` takes it: None (sent), the sink's own
    :class:`DeliveryFailed`, or any other exception (a sink bug must not kill the service) as a
    retryable failure, like a blip."""
    if error is None or isinstance(error, DeliveryFailed):
        return error
    log.error("%s sink failed a delivery: %r", kind, error, exc_info=error)
    return DeliveryFailed(f"error_{type(error).__name__}", retryable=True)


def host_of(address: str) -> str:
    """The callback host a webhook target is capped by (its URL was checked at admission)."""
    try:
        return (urlsplit(address).hostname or "").lower()
    except ValueError:
        return ""


def targets_of(entry: Entry) -> list[Target]:
    """The sinks an entry goes to (``kafka`` per topic, ``webhook`` for a URL)."""
    stored = Targets.from_json(entry.deliver)
    out = [Target("kafka", t) for t in stored.topics]
    if stored.url:
        out.append(Target("webhook", stored.url))
    return out


class Dispatcher:
    """Holds up to ``delivery_batch_max_entries`` entries; each :meth:`step` reads, sends what is
    due and acknowledges what is finished."""

    def __init__(
        self,
        outbox: OutboxLike,
        sinks: Mapping[str, Sink],
        settings: Settings,
        report: DeliveryReport,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000,
    ) -> None:
        self._outbox = outbox
        self._sinks = sinks
        self._s = settings
        self._report = report
        self._clock = clock
        self._wall_ms = wall_ms
        self.held: dict[str, Held] = {}
        # tries of concurrent sinks under way: settled by a later round, never waited on
        self._flying: dict[Future[None], tuple[Held, Target, Delivery]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: Counter[str] = Counter()  # callback host -> tries under way
        self._touched_s = clock()
        self._reclaimed_s = float("-inf")
        self._resumed = False  # this consumer's own unfinished entries, from before a restart

    def step(self, block_ms: int = 1_000) -> int:
        """One round: keep held entries ours, take over abandoned ones, read new ones (waiting up
        to ``block_ms``, less when a retry is due sooner), send what is due. Returns deliveries tried."""
        now = self._clock()
        room = self._s.delivery_batch_max_entries - len(self.held)
        if not self._resumed:
            self._take(self._outbox.read(room, None, mine=True))
            self._resumed = True
            room = self._s.delivery_batch_max_entries - len(self.held)
        if self.held and now - self._touched_s >= self._s.delivery_claim_idle_s / 3:
            self._outbox.touch(list(self.held))
            self._touched_s = now
        if room > 0 and now - self._reclaimed_s >= self._s.delivery_claim_idle_s / 2:
            self._reclaimed_s = now
            self._take(self._outbox.reclaim(room))
            room = self._s.delivery_batch_max_entries - len(self.held)
        if room > 0:
            wait = self._wait_ms(block_ms)
            self._take(self._outbox.read(room, wait))
        elif (wait := self._wait_ms(block_ms)) > 0:
            time.sleep(wait / 1000)  # full of entries backing off: nothing to read, nothing due yet
        return self._send_due()

    def _wait_ms(self, block_ms: int) -> int:
        """How long a read may wait: until the next retry is due, at most ``block_ms``."""
        if self._flying:  # a try may end any moment: look again soon
            block_ms = min(block_ms, 20)
        now = self._clock()
        # a due try waiting for its host's tries under way to end is not due yet (no spinning)
        dues = [
            t.due_s
            for h in self.held.values()
            for t in h.targets
            if t.due_s != math.inf and not (t.due_s <= now and self._host_full(t))
        ]
        if not dues:
            return block_ms
        return max(0, min(block_ms, int((min(dues) - now) * 1000)))

    def _take(self, entries: Sequence[Entry]) -> None:
        """Hold new entries; one whose record is gone or names no target is finished at once. An
        entry of a tenant that already holds its share of entries backing off is not held (see
        :meth:`_release_over_share`), unless it is past its bound (its last try, then given up)."""
        finished: list[str] = []
        backing = Counter(h.tenant for h in self.held.values() if h.backing_off)
        for entry in entries:
            if entry.entry_id in self.held:
                continue
            held = Held(entry, targets_of(entry))
            if entry.body is None:  # expired (INFERQ_RESULT_TTL_S) or forgotten before delivery
                for t in held.targets:
                    self._report.outcome(held.delivery(t), t.kind, "failed", "result_gone")
                finished.append(entry.entry_id)
                continue
            if not held.targets:
                finished.append(entry.entry_id)
                continue
            if backing[held.tenant] >= self._share() and not self._past_bound(entry):
                continue  # left pending and untouched: taken over again once idle (delivery_claim_idle_s)
            self.held[entry.entry_id] = held
        self._outbox.done(finished)
        self._report.flush()

    def _send_due(self) -> int:
        """Send every due target, a batch per sink kind (concurrent sinks: started, settled by a later
        round); settle each outcome; acknowledge the entries with nothing left."""
        self._collect()
        now = self._clock()
        by_kind: dict[str, list[tuple[Held, Target]]] = {}
        for held in self.held.values():
            for t in held.targets:
                if t.due_s <= now:
                    by_kind.setdefault(t.kind, []).append((held, t))
        tried = 0
        for kind, due in by_kind.items():
            sink = self._sinks.get(kind)
            if sink is not None and getattr(sink, "concurrent", False):
                tried += self._start(sink, due)
                continue
            for t in (t for _, t in due):
                t.attempts += 1
            deliveries = [h.delivery(t) for h, t in due]
            outcomes = self._send(kind, deliveries)
            tried += len(due)
            for (held, target), delivery, failed in zip(due, deliveries, outcomes, strict=True):
                self._settle(held, target, delivery, failed)
        finished = [eid for eid, h in self.held.items() if not h.targets]
        for eid in finished:
            del self.held[eid]
        self._release_over_share()
        self._outbox.done(finished)
        self._report.flush()
        return tried

    def _host_full(self, target: Target) -> bool:
        """Whether ``target`` is a concurrent sink's whose host has all its tries under way."""
        concurrent = getattr(self._sinks.get(target.kind), "concurrent", False)
        return bool(concurrent) and self._in_flight[host_of(target.address)] >= self._s.delivery_max_per_host

    def _start(self, sink: Sink, due: list[tuple[Held, Target]]) -> int:
        """Start the due tries of a concurrent sink, at most ``delivery_max_per_host`` under way per
        host (a target over it waits for the next round); returns how many were started."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._s.delivery_concurrency, thread_name_prefix="inferq-send")
        started = 0
        for held, target in due:
            if self._host_full(target):
                continue  # stays due: started when a try to this host ends
            host = host_of(target.address)
            target.attempts += 1
            target.due_s = math.inf  # under way
            delivery = held.delivery(target)
            self._in_flight[host] += 1
            self._flying[self._pool.submit(sink.send, delivery)] = (held, target, delivery)
            started += 1
        return started

    def _collect(self) -> None:
        """Settle the tries of concurrent sinks that have ended."""
        for future in [f for f in self._flying if f.done()]:
            held, target, delivery = self._flying.pop(future)
            host = host_of(target.address)
            self._in_flight[host] -= 1
            if self._in_flight[host] <= 0:
                del self._in_flight[host]
            self._settle(held, target, delivery, failure_of(future.exception(), target.kind))

    def _share(self) -> int:
        """Entries one tenant may hold backing off: half the slots (at least one)."""
        return max(1, self._s.delivery_batch_max_entries // 2)

    def _past_bound(self, entry: Entry) -> bool:
        return self._wall_ms() >= entry.terminal_ms + self._s.delivery_max_s * 1000

    def _release_over_share(self) -> None:
        """Let go of a tenant's entries backing off past its share (the newest first), unless past
        their bound. Why: targets that never answer (a black-holed callback, a topic that times
        out) would otherwise fill every slot until ``delivery_max_s`` and no other tenant's result
        would be read for that long. A released entry stays pending, untouched, and is taken over
        again (by any process) once idle for ``delivery_claim_idle_s``."""
        share = self._share()
        counted: Counter[str | None] = Counter()
        for eid, held in list(self.held.items()):
            if not held.backing_off:
                continue
            counted[held.tenant] += 1
            if counted[held.tenant] > share and not self._past_bound(held.entry):
                del self.held[eid]

    def _send(self, kind: str, deliveries: list[Delivery]) -> list[DeliveryFailed | None]:
        """Each delivery's failure (None = sent), through the sink of ``kind``; a batch at once
        where the sink can (``send_many``), else one by one."""
        sink = self._sinks.get(kind)
        if sink is None:
            return [DeliveryFailed(f"no_{kind}_sink", retryable=False) for _ in deliveries]
        many = getattr(sink, "send_many", None)
        if many is not None:
            try:
                return list(many(deliveries))
            except Exception as e:  # a sink bug must not kill the service: retried like a blip
                log.exception("%s sink failed a batch", kind)
                return [DeliveryFailed(f"error_{type(e).__name__}", retryable=True) for _ in deliveries]
        out: list[DeliveryFailed | None] = []
        for d in deliveries:
            try:
                sink.send(d)
                out.append(None)
            except Exception as e:
                out.append(failure_of(e, kind))
        return out

    def _settle(self, held: Held, target: Target, delivery: Delivery, failed: DeliveryFailed | None) -> None:
        """Sent: done. Failed and retryable within the bound: try again after the backoff.
        Otherwise: given up (undeliverable)."""
        if failed is None:
            self._report.outcome(delivery, target.kind, "sent")
            held.targets.remove(target)
            return
        backoff_s = self.backoff_s(target.attempts)
        give_up_ms = held.entry.terminal_ms + self._s.delivery_max_s * 1000
        if failed.retryable and self._wall_ms() + backoff_s * 1000 <= give_up_ms:
            self._report.outcome(delivery, target.kind, "retried", failed.reason)
            target.due_s = self._clock() + backoff_s
            return
        reason = failed.reason if not failed.retryable else f"gave_up_{failed.reason}"
        self._report.outcome(delivery, target.kind, "failed", reason)
        held.targets.remove(target)

    def backoff_s(self, attempts: int) -> float:
        """Wait after the ``attempts``-th failed try: doubling from the initial wait, capped."""
        return min(
            self._s.delivery_retry_max_s,
            self._s.delivery_retry_initial_s * 2 ** min(max(0, attempts - 1), 30),
        )

    def close(self) -> None:
        if self._pool is not None:  # tries under way end within the sink's own timeout
            self._pool.shutdown(wait=True, cancel_futures=True)
        for sink in self._sinks.values():
            try:
                sink.close()
            except Exception:
                log.warning("closing a sink failed", exc_info=True)
