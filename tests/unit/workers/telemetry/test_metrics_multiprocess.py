"""Counters and histograms written by several processes add up in the exporter's registry."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

CHILD = """
import sys
from workers.telemetry.metrics import ADMITTED, record_batch
n = int(sys.argv[1])
for _ in range(n):
    record_batch("m", size=4, tokens=100, padding_waste=0.25, compute_ms=20.0)
ADMITTED.labels("m").inc(n)
"""


def test_two_worker_processes_sum(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (5, 7):
        subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, check=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("inferq_batch_size_count", {"model": "m"}) == 12
    assert registry.get_sample_value("inferq_batch_size_sum", {"model": "m"}) == 48
    assert registry.get_sample_value("inferq_batch_tokens_sum", {"model": "m"}) == 1200
    assert registry.get_sample_value("inferq_requests_admitted_total", {"model": "m"}) == 12
    assert registry.get_sample_value("inferq_batch_size_bucket", {"model": "m", "le": "4.0"}) == 12
