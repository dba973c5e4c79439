"""Ship log records to Elasticsearch in the background, never blocking the caller.

:meth:`Shipper.offer` puts a record on a bounded queue and returns at once; when the queue is
full the record is dropped and counted (``dropped``), so a slow or absent Elasticsearch never
slows a forward pass. One daemon thread drains the queue in bulk requests (the elasticsearch
client's ``streaming_bulk``). While Elasticsearch is unreachable each batch is appended to a spool
file on local disk instead and the thread backs off (doubling up to ``log_retry_max_s``); once a
bulk request succeeds again the spool is replayed, oldest first, before new records. Every record
carries an ``_id`` and is written with ``op_type: create``, so a batch replayed after a partial
success is not stored twice (the server answers 409 for the copies, which counts as shipped).
Records the server refuses for their content (a mapping error) are counted in ``rejected`` and not
retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, helpers
from elasticsearch import TransportError as ESTransportError

from workers.telemetry.template import install

Doc = dict[str, Any]


@dataclass
class ShipperCounters:
    """Since the process started (tests and diagnostics; drops also reach ``on_drop``, i.e. the metric)."""

    shipped: int = 0
    dropped: int = 0
    rejected: int = 0
    spooled: int = 0
    replayed: int = 0


class Shipper:
    """One per process. ``offer`` is safe from any thread, including inside logging handlers."""

    def __init__(
        self,
        es: Elasticsearch,
        index: str,
        spool_dir: Path,
        *,
        queue_max_records: int = 20_000,
        bulk_max_records: int = 500,
        flush_interval_ms: int = 1_000,
        retry_max_s: float = 30.0,
        spool_max_bytes: int = 256 * 1024 * 1024,
        on_install: Callable[[Elasticsearch, str], object] = install,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.es, self.index = es, index
        self.spool_dir = spool_dir
        self.queue: queue.Queue[Doc] = queue.Queue(queue_max_records)
        self.bulk_max = bulk_max_records
        self.flush_s = flush_interval_ms / 1000.0
        self.retry_max_s = retry_max_s
        self.spool_max_bytes = spool_max_bytes
        self.counters = ShipperCounters()
        self._on_install = on_install
        self._on_drop = on_drop
        self._installed = False
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._spool_name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()

    # -- producer side ----------------------------------------------------------------------
    def offer(self, doc: Doc) -> bool:
        """Queue one record (never blocks); False when it was dropped because the queue is full."""
        doc.setdefault("_id", secrets.token_hex(10))
        try:
            self.queue.put_nowait(doc)
        except queue.Full:
            self._dropped(1)
            return False
        self._idle.clear()
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and the spool replayed (or the timeout); for tests and exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue.empty() and not self.spool_files() and self._idle.wait(0.05):
                return True
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout_s)

    def spool_files(self) -> list[Path]:
        """This process's spool files, and those left by processes that died (oldest first)."""
        if not self.spool_dir.is_dir():
            return []
        mine = f"{os.getpid()}-"
        files = [p for p in self.spool_dir.glob("*.ndjson") if p.name.startswith(mine) or not _owner_alive(p)]
        stats = {p: st for p in files if (st := _stat(p)) is not None}
        return sorted(stats, key=lambda p: stats[p].st_mtime)

    def spool_bytes(self) -> int:
        return sum(st.st_size for p in self.spool_files() if (st := _stat(p)) is not None)

    def _dropped(self, n: int) -> None:
        self.counters.dropped += n
        if self._on_drop is not None:
            with contextlib.suppress(Exception):  # counting must never break logging
                self._on_drop(n)

    # -- the shipping thread -----------------------------------------------------------------
    def _run(self) -> None:
        backoff_s = 0.0
        while not self._stop.is_set():
            batch = self._take()
            try:
                if self.spool_files():
                    self._replay()
                if batch:
                    self._ship(batch)
                backoff_s = 0.0
            except Exception as e:  # unreachable or failing: keep the records on disk
                if batch:
                    self._spool(batch)
                backoff_s = min(self.retry_max_s, max(0.25, backoff_s * 2))
                why = f"{type(e).__name__}: {str(e)[:160]}"
                _warn(f"shipping to Elasticsearch failed ({why}); retrying in {backoff_s:.2f} s")
                self._stop.wait(backoff_s)
            if not batch and self.queue.empty():
                self._idle.set()

    def _take(self) -> list[Doc]:
        """Up to ``bulk_max`` records: waits for the first up to the flush interval, then drains."""
        batch: list[Doc] = []
        try:
            batch.append(self.queue.get(timeout=self.flush_s))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.bulk_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _ship(self, docs: list[Doc]) -> None:
        if not self._installed:
            self._on_install(self.es, self.index)
            self._installed = True
        actions = (
            {
                "_op_type": "create",
                "_index": self.index,
                "_id": d["_id"],
                "_source": {k: v for k, v in d.items() if k != "_id"},
            }
            for d in docs
        )
        for ok, item in helpers.streaming_bulk(
            self.es, actions, raise_on_error=False, raise_on_exception=True, max_retries=0
        ):
            status = next(iter(item.values())).get("status", 0)
            if ok or status == 409:  # 409: this id is already stored (a replay)
                self.counters.shipped += 1
            elif status == 429 or status >= 500:  # overloaded: treat as unreachable, keep them
                raise ESTransportError(f"bulk item status {status}")
            else:
                self.counters.rejected += 1
                _warn(f"Elasticsearch refused a log record: {item}")

    def _spool(self, docs: list[Doc]) -> None:
        """Append records to this process's spool file; drop (and count) past the size cap."""
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # records may hold request ids
        if self.spool_bytes() >= self.spool_max_bytes:
            self._dropped(len(docs))
            return
        path = self.spool_dir / f"{self._spool_name}.ndjson"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d, default=str) + "\n")
        self.counters.spooled += len(docs)

    def _replay(self) -> None:
        """Ship every spool file of this process, oldest first; each is deleted once shipped."""
        for path in self.spool_files():
            sending = path.with_suffix(f".sending-{os.getpid()}")
            try:
                path.rename(sending)  # atomic: one process claims a dead process's file
            except FileNotFoundError:
                continue
            try:
                docs = [json.loads(line) for line in sending.read_text(encoding="utf-8").splitlines() if line]
                for i in range(0, len(docs), self.bulk_max):
                    self._ship(docs[i : i + self.bulk_max])
            except BaseException:
                sending.rename(path)  # ids are kept, so a later replay does not duplicate
                raise
            sending.unlink()
            self.counters.replayed += len(docs)


def _stat(path: Path) -> os.stat_result | None:
    """A spool file's stat, or None once the shipper thread has taken it for replay (renamed:
    a check-then-stat would race with that rename)."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _owner_alive(path: Path) -> bool:
    """Whether the process that wrote this spool file (``<pid>-<token>.ndjson``) still runs."""
    try:
        os.kill(int(path.name.split("-", 1)[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _warn(text: str) -> None:
    """Report on stderr, never through logging (which would feed the shipper itself)."""
    print(f"inferq log shipper: {text}", file=sys.stderr, flush=True)
