"""Overload: offer three times the measured capacity for a while; memory must stay flat.

Capacity is measured first (a burst, completions per second). Then requests with a deadline are
offered at 3 × that rate. Backpressure keeps the backlog in Kafka, so the intake's, the worker's
and Redis's memory should not grow with it; the sampler records them once a second with the
Kafka lag and the requests in flight. Every request must end ``done`` or ``expired``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from ops.drill.traffic import Ledger, Publisher
from ops.metrics.exporter import PipelineCollector
from ops.stack import Stack
from schemas.connections import kafka_options, redis_client
from schemas.messages import InferenceResult
from schemas.naming import requests_topic
from schemas.settings import Settings

CALIBRATION_REQUESTS = 600
OVERLOAD_FACTOR = 3.0


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process, MiB (VmRSS), or None when it is not running."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def calibrate(ds: Settings, ledger: Ledger, timeout_s: float = 300.0) -> float:
    """Completions per second of a burst published as fast as the producer goes."""
    pub = Publisher(ds, f"calibrate-{secrets.token_hex(3)}", CALIBRATION_REQUESTS, 100_000.0).start()
    final = ledger.wait_terminal(lambda: list(pub.accepted), pub.done, timeout_s)
    results = [InferenceResult.model_validate_json(b) for _, b in final.values() if b]
    first = min(r.timings.published_ms or 0.0 for r in results)
    last = max(r.timings.done_ms or 0.0 for r in results)
    return len(results) / max(0.001, (last - first) / 1000.0)


class Sampler:
    """Once a second: RSS of intake and worker, Redis memory, Kafka lag, requests in flight."""

    def __init__(self, stack: Stack, ds: Settings) -> None:
        self.stack, self.ds = stack, ds
        self.redis = redis_client(ds, ride_out=False, socket_timeout=2)
        self.collector = PipelineCollector(ds)
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None
        self.rows: list[dict[str, float | None]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            row: dict[str, float | None] = {"t_s": round(time.monotonic() - self._t0, 1)}
            for svc in ("intake", "worker"):
                row[f"{svc}_rss_mb"] = rss_mb(self.stack.pid(svc))
            try:
                info = self.redis.info("memory")
                row["redis_used_mb"] = info["used_memory"] / 2**20
                row["redis_rss_mb"] = info["used_memory_rss"] / 2**20
            except Exception:
                row["redis_used_mb"] = row["redis_rss_mb"] = None
            in_flight = 0.0
            for metric in self.collector.collect():
                for sample in metric.samples:
                    if sample.name == "inferq_requests_in_flight":
                        in_flight += sample.value
            row["kafka_lag"], row["in_flight"] = self._lag(), in_flight
            self.rows.append(row)

    def _lag(self) -> float | None:
        """Records not yet committed by the intake's group, over partitions that have a commit
        (a transient empty answer from the broker is skipped, not read as "nothing committed")."""
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(**kafka_options(self.ds), request_timeout_ms=5_000)
                self._consumer = KafkaConsumer(**kafka_options(self.ds), enable_auto_commit=False)
            assert self._consumer is not None
            topic = requests_topic(self.ds)
            tps = [TopicPartition(topic, p) for p in sorted(self._consumer.partitions_for_topic(topic) or ())]
            group = self.ds.kafka_group_id
            committed = self._admin.list_group_offsets({group: tps}).get(group, {})
            ends = self._consumer.end_offsets(tps)
            marks = {tp: m.offset for tp, m in committed.items() if m is not None and m.offset >= 0}
            return float(sum(max(0, ends[tp] - off) for tp, off in marks.items()))
        except Exception:
            return None

    def stop(self) -> list[dict[str, float | None]]:
        self._stop.set()
        self._thread.join(5)
        return self.rows


def run_overload(
    stack: Stack,
    ds: Settings,
    ledger: Ledger,
    duration_s: float,
    progress: Callable[[float], None],
    deadline_s: float = 20.0,
) -> dict[str, Any]:
    capacity = calibrate(ds, ledger)
    offered = OVERLOAD_FACTOR * capacity
    sampler = Sampler(stack, ds)
    t0 = time.monotonic()
    pub = Publisher(ds, f"overload-{secrets.token_hex(3)}", int(offered * duration_s), offered, deadline_s)
    pub.start()
    while not pub.done.wait(0.5):
        progress(min(duration_s, time.monotonic() - t0))
    offered_s = time.monotonic() - t0
    final = ledger.wait_terminal(lambda: list(pub.accepted), pub.done, deadline_s + 300.0)
    drained_s = time.monotonic() - t0
    rows = sampler.stop()
    late: list[float] = []  # how long after its deadline each expired result was written, ms
    done_late = 0  # done, but finished after the deadline (it started before it)
    for rid, (st, body) in final.items():
        due = pub.accepted[rid].deadline_ms()
        if body is None or due is None or st not in ("expired", "done"):
            continue
        over = (InferenceResult.model_validate_json(body).timings.done_ms or 0.0) - due
        if st == "expired":
            late.append(max(0.0, over))
        elif over > 0:
            done_late += 1
    late.sort()
    return {
        "capacity_per_s": round(capacity, 1),
        "offered_per_s": round(offered, 1),
        "offered_for_s": round(offered_s, 1),
        "requests": len(final),
        "by_status": dict(Counter(st or "missing" for st, _ in final.values())),
        "lost": sum(st in (None, "queued", "running") for st, _ in final.values()),
        "drained_after_s": round(drained_s, 1),
        "deadline_s": deadline_s,
        "memory_mb": _memory_summary(rows),
        "peak_kafka_lag": max((r["kafka_lag"] or 0.0 for r in rows), default=0.0),
        "median_kafka_lag": _median([r["kafka_lag"] for r in rows if r["kafka_lag"] is not None]),
        "peak_in_flight": max((r["in_flight"] or 0.0 for r in rows), default=0.0),
        "samples": rows,
        "expired_written_after_deadline_ms": {
            "p50": round(late[len(late) // 2], 1) if late else None,
            "max": round(late[-1], 1) if late else None,
        },
        "done_after_deadline": done_late,
    }


def _memory_summary(rows: list[dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """First, peak and last sample of each memory series (MiB)."""
    out: dict[str, dict[str, float | None]] = {}
    for key in ("intake_rss_mb", "worker_rss_mb", "redis_used_mb", "redis_rss_mb"):
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = {
            "first": _r(values[0]) if values else None,
            "peak": _r(max(v for v in values if v is not None)) if values else None,
            "last": _r(values[-1]) if values else None,
        }
    return out


def _median(values: list[float | None]) -> float | None:
    clean = sorted(v for v in values if v is not None)
    return clean[len(clean) // 2] if clean else None


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)
