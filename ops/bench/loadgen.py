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
from multiprocessing.synchronize import Event

from producers.client import InferqClient
from schemas.messages import InferenceRequest
from schemas.naming import result_key
from schemas.settings import Settings
from workers.store.store import DoneWatcher, ResultStore

READ_CHUNK = 2_000  # results read per Redis round trip (bounded: a pipeline's replies sit in memory)
STATUS = re.compile(rb'"status"\s*:\s*"([a-z_]+)"')
UNREADABLE = "unreadable"


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


def collect(
    settings: Settings,
    tag: str,
    generators: int,
    n: int,
    timeout_s: float,
    events: tuple[Event, Event],
    report: mp.Queue,
) -> None:
    """The collector process: subscribe, say ready, then follow the ``done`` channel until every id
    of the burst was announced (or ``timeout_s``); a final read catches missed announcements. It
    stays alive until ``quit`` (the second event), so its CPU is still readable at the end."""
    ready, quit_ = events
    expected = {rid for part in burst_ids(tag, generators, n) for rid in part}
    store = ResultStore.from_settings(settings)
    watcher = DoneWatcher(store)
    ready.set()
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    out = Collected(n)
    give_up = time.monotonic() + timeout_s
    try:
        while len(seen) < n and time.monotonic() < give_up:
            fresh = []
            for rid in watcher.finished(0.5):
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
        out.timed_out = len(seen) < n
    finally:
        watcher.close()
    out.duplicated = sum(1 for c in seen.values() if c > 1)
    out.by_status = dict(statuses)
    report.put(("collected", os.getpid(), out))
    quit_.wait()


def generate(
    settings: Settings,
    model: str,
    ids: Sequence[str],
    texts: Sequence[str],
    events: tuple[Event, Event, Event],
    report: mp.Queue,
) -> None:
    """A generator process: connect, say ready, wait for ``go``, publish ``ids`` (texts in turn);
    then wait for ``quit``, so its CPU is still readable when the burst ends."""
    ready, go, quit_ = events
    client = InferqClient(settings)
    client.producer  # noqa: B018  (connect now, not inside the measured burst)
    ready.set()
    go.wait()
    t0 = time.monotonic()
    for i, rid in enumerate(ids):
        client.publish(
            InferenceRequest(task="embed", model=model, inputs=texts[i % len(texts)], request_id=rid)
        )
    client.flush()
    report.put(("published", os.getpid(), (len(ids), t0, time.monotonic())))
    quit_.wait()
    client.close()


@dataclass
class Published:
    requests: int
    t0: float
    t1: float

    @property
    def rate_per_s(self) -> float:
        return self.requests / (self.t1 - self.t0) if self.t1 > self.t0 else float("nan")


class LoadProcesses:
    """The generators and the collector of one burst, started (and connected) before it.

    ``pids`` are known once :meth:`start` returns, so the bench can read their CPU; they stay
    alive until :meth:`close`, after the bench's last CPU sample."""

    def __init__(
        self, settings: Settings, model: str, texts: Sequence[str], n: int, generators: int, timeout_s: float
    ) -> None:
        self._ctx = mp.get_context("spawn")  # no fork of a parent holding threads and sockets
        self.n, self.generators, self.timeout_s = n, generators, timeout_s
        tag = f"ceil{os.getpid()}x{time.monotonic_ns() % 10**9}"
        self._report: mp.Queue = self._ctx.Queue()
        self._go, self._quit = self._ctx.Event(), self._ctx.Event()
        self._readies: list[Event] = []
        self._procs: list[mp.process.BaseProcess] = []
        ready = self._ctx.Event()
        self._readies.append(ready)
        self._procs.append(
            self._ctx.Process(
                target=collect,
                args=(settings, tag, generators, n, timeout_s, (ready, self._quit), self._report),
                name="ceiling-collector",
                daemon=True,
            )
        )
        for g, part in enumerate(burst_ids(tag, generators, n)):
            ready = self._ctx.Event()
            self._readies.append(ready)
            self._procs.append(
                self._ctx.Process(
                    target=generate,
                    args=(settings, model, part, list(texts), (ready, self._go, self._quit), self._report),
                    name=f"ceiling-generator-{g}",
                    daemon=True,
                )
            )
        self._collected: Collected | None = None
        self._published: list[Published] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self, timeout_s: float = 120.0) -> None:
        """Start every process and wait until each is connected (and the collector subscribed)."""
        for p in self._procs:
            p.start()
        give_up = time.monotonic() + timeout_s
        for ready, p in zip(self._readies, self._procs, strict=True):
            while not ready.wait(0.2):
                if not p.is_alive() or time.monotonic() > give_up:
                    self.close()
                    raise RuntimeError(f"{p.name} did not get ready (exit code {p.exitcode})")

    def go(self) -> float:
        """Release the generators; returns when (``time.monotonic``)."""
        t = time.monotonic()
        self._go.set()
        return t

    def wait(self) -> tuple[list[Published], Collected]:
        """Block until every generator published and the collector is done (or gave up)."""
        give_up = time.monotonic() + self.timeout_s + 60.0
        while self._collected is None or len(self._published) < self.generators:
            try:
                kind, _pid, payload = self._report.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in self._procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > give_up:
                    raise RuntimeError(f"load processes failed or hung: {dead or 'timeout'}") from None
                continue
            if kind == "collected":
                self._collected = payload
            else:
                self._published.append(Published(*payload))
        return self._published, self._collected

    def close(self) -> None:
        """Let every process exit (after the last CPU sample), then reap it."""
        self._quit.set()
        for p in self._procs:
            if p.is_alive():
                p.join(timeout=10.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5.0)
