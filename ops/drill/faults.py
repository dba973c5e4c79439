"""The faults a drill injects into a running local stack, and what each one observed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from ops.stack import Stack
from schemas.errors import StackError


@dataclass(frozen=True)
class Fault:
    service: str
    sig: int
    what: str


FAULTS: dict[str, Fault] = {
    "worker-kill": Fault("worker", signal.SIGKILL, "kill -9 the Celery worker while it runs batches"),
    "intake-kill": Fault("intake", signal.SIGKILL, "kill -9 the intake between consume and commit"),
    "redis-restart": Fault("redis", signal.SIGTERM, "restart Redis (append-only file on)"),
    # SIGINT: the broker's own way to stop (Ctrl-C), which saves its data
    "broker-restart": Fault("broker", signal.SIGINT, "restart the Kafka broker"),
}


def inject(
    stack: Stack, fault: Fault, before: Callable[[], dict[str, int]] | None = None
) -> dict[str, float | int]:
    """Stop ``fault.service`` with its signal, wait until it is gone, start it again and wait until
    it is ready. ``before`` is read just before the signal (e.g. how many requests were running)."""
    seen = before() if before else {}
    t0 = time.monotonic()
    stack.kill(fault.service, fault.sig)
    give_up = t0 + 30.0
    while stack.pid(fault.service) is not None:
        if time.monotonic() > give_up:
            raise StackError(f"{fault.service} still running 30 s after signal {fault.sig}")
        time.sleep(0.05)
    down = time.monotonic()
    stack.up(only=[fault.service])
    return {**seen, "stopped_after_s": down - t0, "back_after_s": time.monotonic() - t0}


def counter_totals(metrics_dir: Path, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of each counter over every process of the stack (dead ones included), from the
    prometheus-client multi-process files the stack's processes write."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    totals = dict.fromkeys(names, 0.0)
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals
