"""The ceiling bench's client side, in processes of its own: generators publish, a collector reads.

Each generator is a process with the project's :class:`producers.client.InferqClient`, publishing
its share of the burst to Kafka as fast as the client goes (lingering as the client does by default,
so records travel in batches). The collector is one more process: subscribed to the ``done`` channel
before anything is published, it reads each announced result's bytes back from Redis in one round
trip per wake-up, as a client waiting for many results would. So the client's cost is real work in
separate processes, and the bench reads their CPU from /proc like any other.

Request ids are ``<tag>-<generator>-<index>``: the collector knows the whole set up front, so it
counts lost (never terminal) and duplicated (announced more than once) requests exactly.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from producers.client import InferqClient
from schemas.messages import InferenceRequest
from schemas.naming import result_key
from schemas.settings import Settings
from workers.store.store import DoneWatcher, ResultStore

READ_CHUNK = 2_000  # results read per Redis round trip (bounded: a pipeline's replies sit in memory)
STATUS = re.compile(rb'"status"\s*:\s*"([a-z_]+)"')
UNREADABLE = "unreadable"
DUPLICATE_WAIT_S = 0.3  # after the last id came in, how long to watch for a second announcement


def burst_ids(tag: str, generators: int, n: int) -> list[list[str]]:
    """The request ids of a burst of ``n``, dealt round-robin to ``generators`` (valid ids: 16+ chars)."""
    ids = [f"{tag}-{i % generators}-{i:09d}" for i in range(n)]
    return [ids[g::generators] for g in range(generators)]


def status_of(body: bytes | None) -> str | None:
    """A stored result's status, read from its bytes without parsing the outputs (the collector's
    cost stays the pipeline's, not JSON's): None for no result; ``unreadable`` for bytes without one."""
    if body is None:
        return None
    m = STATUS.search(body)
    return m.group(1).decode() if m else UNREADABLE


@dataclass
class Collected:
    """What the collector saw: completion times (``time.monotonic``), statuses, lost and duplicated."""

    expected: int
    done_at: list[float] = field(default_factory=list)
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0
    strays: int = 0  # announcements of ids not in this burst
    timed_out: bool = False


def _read_statuses(store: ResultStore, settings: Settings, ids: Sequence[str]) -> list[str | None]:
    out: list[str | None] = []
    for k in range(0, len(ids), READ_CHUNK):
        pipe = store.client.pipeline(transaction=False)
        for rid in ids[k : k + READ_CHUNK]:
            pipe.hget(result_key(settings, rid), "body")
        out.extend(status_of(b) for b in pipe.execute())
    return out


@dataclass(frozen=True)
class Burst:
    """One burst's orders to the load processes."""

    settings: Settings
    model: str
    tag: str  # the ids' prefix: unique per burst
    n: int
    generators: int
    timeout_s: float
    callback_url: str | None = None  # every request names it (the bench's webhooks-on runs)


def _collect(order: Burst, report: mp.Queue) -> Collected:
    """Subscribe, say ready, then follow the ``done`` channel until every id of the burst was
    announced (or ``timeout_s``); a final read catches missed announcements."""
    settings = order.settings
    expected = {rid for part in burst_ids(order.tag, order.generators, order.n) for rid in part}
    store = ResultStore.from_settings(settings)
    watcher = DoneWatcher(store)
    report.put(("ready", order.tag, os.getpid()))
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    out = Collected(order.n)
    give_up = time.monotonic() + order.timeout_s
    try:
        while time.monotonic() < give_up:
            if len(seen) == order.n:  # a last short wait: a duplicate announcement comes soon after
                give_up = min(give_up, time.monotonic() + DUPLICATE_WAIT_S)
            fresh = []
            for rid in watcher.finished(0.2):
                if rid not in expected:
                    out.strays += 1
                    continue
                seen[rid] += 1
                if seen[rid] == 1:
                    fresh.append(rid)
            now = time.monotonic()
            out.done_at.extend(now for _ in fresh)
            statuses.update(s or UNREADABLE for s in _read_statuses(store, settings, fresh))
        unseen = sorted(expected - seen.keys())
        late = _read_statuses(store, settings, unseen)  # terminal, but the wake-up was missed
        statuses.update(s for s in late if s is not None and s not in ("queued", "running"))
        out.lost = sum(1 for s in late if s is None or s in ("queued", "running"))
        out.timed_out = len(seen) < order.n
    finally:
        watcher.close()
        store.client.close()
    out.duplicated = sum(1 for c in seen.values() if c > 1)
    out.by_status = dict(statuses)
    return out


def _collector_main(commands: mp.Queue, report: mp.Queue) -> None:
    """The collector process: one :class:`Burst` after another, until None."""
    while (order := commands.get()) is not None:
        report.put(("collected", order.tag, _collect(order, report)))


def _generator_main(index: int, texts: Sequence[str], commands: mp.Queue, report: mp.Queue) -> None:
    """A generator process: on a :class:`Burst`, connect and say ready; on ``go``, publish its share
    of the burst's ids (texts in turn) and report; until None."""
    client: InferqClient | None = None
    order: Burst | None = None
    ids: list[str] = []
    while (cmd := commands.get()) is not None:
        if isinstance(cmd, Burst):
            if client is not None:
                client.close()
            order, ids = cmd, burst_ids(cmd.tag, cmd.generators, cmd.n)[index]
            client = InferqClient(cmd.settings)
            client.producer  # noqa: B018  (connect now, not inside the measured burst)
            report.put(("ready", cmd.tag, os.getpid()))
        elif cmd == "go" and client is not None and order is not None:
            t0 = time.monotonic()
            for i, rid in enumerate(ids):
                request = InferenceRequest(
                    task="embed",
                    model=order.model,
                    inputs=texts[i % len(texts)],
                    request_id=rid,
                    callback_url=order.callback_url,
                )
                client.publish(request)
            client.flush()
            report.put(("published", order.tag, Published(len(ids), t0, time.monotonic())))
    if client is not None:
        client.close()


@dataclass
class Published:
    requests: int
    t0: float
    t1: float

    @property
    def rate_per_s(self) -> float:
        return self.requests / (self.t1 - self.t0) if self.t1 > self.t0 else float("nan")


class LoadPool:
    """The generator processes and the collector process, kept for burst after burst.

    They stay alive between bursts, so their CPU is readable from /proc throughout (``pids``) and
    no burst pays their start-up (imports, ~seconds each)."""

    def __init__(self, texts: Sequence[str], generators: int = 1) -> None:
        ctx = mp.get_context("spawn")  # no fork of a parent holding threads and sockets
        self.generators = generators
        self._report: mp.Queue = ctx.Queue()
        self._commands: list[mp.Queue] = [ctx.Queue() for _ in range(generators + 1)]
        self._procs: list[BaseProcess] = [
            ctx.Process(
                target=_collector_main,
                args=(self._commands[0], self._report),
                name="ceiling-collector",
                daemon=True,
            ),
            *(
                ctx.Process(
                    target=_generator_main,
                    args=(g, list(texts), self._commands[g + 1], self._report),
                    name=f"ceiling-generator-{g}",
                    daemon=True,
                )
                for g in range(generators)
            ),
        ]
        for p in self._procs:
            p.start()
        self._order: Burst | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def named_pids(self) -> dict[str, int]:
        """``client-collector``, ``client-generator-0``, …: pid."""
        return {f"client-{p.name.removeprefix('ceiling-')}": p.pid for p in self._procs if p.pid is not None}

    def prepare(
        self,
        settings: Settings,
        model: str,
        n: int,
        timeout_s: float,
        ready_s: float = 120.0,
        callback_url: str | None = None,
    ) -> None:
        """Give every process the next burst and wait until each is connected (the collector
        subscribed to the ``done`` channel before anything is published)."""
        tag = f"ceil{os.getpid()}x{time.monotonic_ns() % 10**12}"
        self._order = Burst(settings, model, tag, n, self.generators, timeout_s, callback_url)
        for q in self._commands:
            q.put(self._order)
        self._expect("ready", len(self._procs), ready_s)

    def go(self) -> float:
        """Release the generators; returns when (``time.monotonic``)."""
        t = time.monotonic()
        for q in self._commands[1:]:
            q.put("go")
        return t

    def wait(self) -> tuple[list[Published], Collected]:
        """Block until every generator published and the collector is done (or gave up)."""
        assert self._order is not None, "prepare() first"
        got = self._expect("", len(self._procs), self._order.timeout_s + 60.0)
        published = [p for kind, p in got if kind == "published"]
        collected = [c for kind, c in got if kind == "collected"]
        return published, collected[0]

    def _expect(self, kind: str, count: int, timeout_s: float) -> list[tuple[str, Any]]:
        """``count`` reports of this burst (of ``kind``, or any kind when empty); RuntimeError
        when a process died or they do not come within ``timeout_s``."""
        assert self._order is not None
        got: list[tuple[str, Any]] = []
        give_up = time.monotonic() + timeout_s
        while len(got) < count:
            try:
                what, tag, payload = self._report.get(timeout=0.5)
            except queue.Empty:
                dead = [p.name for p in self._procs if not p.is_alive()]
                if dead or time.monotonic() > give_up:
                    raise RuntimeError(
                        f"load processes {'died: ' + ', '.join(dead) if dead else 'hung'} "
                        f"(waiting for {kind or 'results'} of a burst of {self._order.n})"
                    ) from None
                continue
            if tag == self._order.tag and (not kind or what == kind):
                got.append((what, payload))
        return got

    def close(self) -> None:
        """Let every process exit, then reap it."""
        for q in self._commands:
            q.put(None)
        for p in self._procs:
            p.join(timeout=10.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
