"""Intake liveness: each intake stamps every poll; the exporter and ``inferq-ops`` read the stamps.

A crashed or wedged intake writes nothing, so the age of its last stamp is what tells it is gone:
the stamp is a ``mostrecent`` gauge in the shared multi-process folder, labelled with the
replica's name (its static group member id, else the host: one per pod), so it outlives the
process that wrote it and a restarted replica overwrites its predecessor's.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from schemas.settings import Settings
from workers.telemetry.metrics import INTAKE_LAST_POLL

_HOST = socket.gethostname()


def intake_replica(settings: Settings) -> str:
    """The name an intake's stamps carry: its static group member id, else the host name."""
    return settings.kafka_group_instance_id or _HOST


def record_poll(settings: Settings) -> None:
    """Called by the intake on each poll (a few microseconds: one write to a memory-mapped file)."""
    INTAKE_LAST_POLL.labels(intake_replica(settings)).set_to_current_time()


def last_polls(folder: Path) -> dict[str, float]:
    """Each replica's last poll (Unix seconds), read from the multi-process folder's gauge files."""
    files = [str(p) for p in folder.glob("gauge_mostrecent_*.db")] if folder.is_dir() else []
    if not files:
        return {}
    out: dict[str, float] = {}
    for path in files:  # one at a time: a process that is starting has an empty file (skipped)
        try:
            metrics = MultiProcessCollector.merge([path], accumulate=False)
        except (OSError, struct.error, ValueError):
            continue
        for metric in metrics:
            if metric.name != "inferq_intake_last_poll_timestamp_seconds":
                continue
            for sample in metric.samples:
                replica = sample.labels.get("replica", "")
                out[replica] = max(out.get(replica, 0.0), sample.value)
    return out


class IntakeLiveness(Collector):
    """``inferq_intake_up{replica}`` (1 while it polled within ``intake_stalled_after_s``) and
    ``inferq_intake_last_poll_age_seconds{replica}``, read from local files at scrape time."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.stalled_after_s = settings.intake_stalled_after_s
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        up = GaugeMetricFamily(
            "inferq_intake_up", "1 while the intake replica polled Kafka recently", labels=["replica"]
        )
        age = GaugeMetricFamily(
            "inferq_intake_last_poll_age_seconds", "Seconds since the replica last polled", labels=["replica"]
        )
        for replica, stamp in sorted(last_polls(self.folder).items()):
            seconds = max(0.0, now - stamp)
            up.add_metric([replica], 1.0 if seconds <= self.stalled_after_s else 0.0)
            age.add_metric([replica], seconds)
        yield from (up, age)
