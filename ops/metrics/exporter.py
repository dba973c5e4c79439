"""``inferq-exporter``: one Prometheus endpoint for the whole pipeline.

At each scrape it serves
- the counters and histograms every intake, worker and API process wrote to the shared
  multi-process folder (``PROMETHEUS_MULTIPROC_DIR``), summed across processes;
- each intake's liveness from the stamps it writes on every poll (``inferq_intake_up``,
  ``inferq_intake_last_poll_age_seconds``: :mod:`workers.telemetry.liveness`);
- what it reads live: Kafka consumer lag per topic, partition and group; Celery queue depth per
  queue (all priority levels); requests in flight; workers up per model; the log spool's size on
  disk; GPU utilisation and memory through NVML when a GPU and nvidia-ml-py are present.

A source that does not answer is skipped for that scrape and counted in
``inferq_exporter_errors_total{source}``, so one dead dependency never blanks the others.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from schemas.connections import kafka_options, redis_client
from schemas.messages import now_ms
from schemas.naming import (
    inflight_key,
    metrics_dir,
    model_queue,
    outbox_key,
    outbox_refused_key,
    requests_topic,
    spool_dir,
    worker_key_pattern,
)
from schemas.settings import Settings, get_settings
from workers.telemetry.liveness import IntakeLiveness
from workers.telemetry.logs import configure_logging, stop_logging
from workers.transport.app import CELERY_PRIORITY
from workers.transport.kombu import priority_list, queue_of

log = logging.getLogger(__name__)

ERRORS = Counter("inferq_exporter_errors", "Scrapes where a source did not answer", ["source"])


class PipelineCollector(Collector):
    """Reads Kafka and Redis at scrape time (cheap: a handful of round trips)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.results = redis_client(settings, ride_out=False, socket_timeout=2)
        self.broker = redis_client(settings, settings.celery_broker_url, ride_out=False, socket_timeout=2)
        self.cache = (
            redis_client(settings, settings.cache_redis_url, ride_out=False, socket_timeout=2)
            if settings.cache_redis_url
            else None
        )
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None

    def collect(self) -> Iterator[Metric]:
        for source, fn in (
            ("kafka", self._kafka),
            ("redis", self._redis),
            ("outbox", self._outbox),
            ("celery", self._celery),
            ("cache", self._cache),
            ("spool", self._spool),
            ("gpu", self._gpu),
        ):
            try:
                yield from fn()
            except Exception as e:
                ERRORS.labels(source).inc()
                log.warning("exporter could not read %s: %r", source, e)
                if source == "kafka":
                    self._close_kafka()

    # -- Kafka --------------------------------------------------------------------------------
    def _kafka(self) -> Iterator[Metric]:
        if self._admin is None:
            self._admin = KafkaAdminClient(**kafka_options(self.s), request_timeout_ms=5_000)
            self._consumer = KafkaConsumer(
                **kafka_options(self.s),
                request_timeout_ms=5_000,
                enable_auto_commit=False,
            )
        assert self._consumer is not None
        topic, group = requests_topic(self.s), self.s.kafka_group_id
        partitions = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        committed = self._admin.list_group_offsets({group: tps}).get(group, {}) if tps else {}
        ends = self._consumer.end_offsets(tps) if tps else {}
        starts = self._consumer.beginning_offsets(tps) if tps else {}
        lag = GaugeMetricFamily(
            "inferq_kafka_consumer_lag",
            "Records in the topic the group has not committed yet",
            labels=["topic", "partition", "group"],
        )
        for tp in tps:
            mark = committed.get(tp)
            done = mark.offset if mark is not None and mark.offset >= 0 else starts[tp]
            lag.add_metric([tp.topic, str(tp.partition), group], max(0, ends[tp] - done))
        yield lag

    def _close_kafka(self) -> None:
        for c in (self._admin, self._consumer):
            if c is not None:
                try:
                    c.close()
                except Exception:  # already broken
                    log.debug("closing a broken Kafka client failed", exc_info=True)
        self._admin = self._consumer = None

    # -- Redis: results and workers -----------------------------------------------------------
    def _redis(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily(
            "inferq_requests_in_flight", "Requests admitted and not yet terminal (queued or running)"
        )
        # a sorted set of scoped ids by result expiry (ms): the unexpired ones are in flight
        inflight.add_metric([], float(self.results.zcount(inflight_key(self.s), now_ms(), "+inf")))
        yield inflight
        up = GaugeMetricFamily("inferq_workers_up", "Ready workers serving each model", labels=["model"])
        counts: dict[str, int] = {m: 0 for m in self.s.model_names()}
        for key in self.results.scan_iter(match=worker_key_pattern(self.s), count=100):
            models = self.results.get(key) or b""
            for m in (models.decode() if isinstance(models, bytes) else models).split(","):
                if m:
                    counts[m] = counts.get(m, 0) + 1
        for m, n in sorted(counts.items()):
            up.add_metric([m], n)
        yield up

    # -- the delivery outbox (reply topics, webhooks) ------------------------------------------------
    def _outbox(self) -> Iterator[Metric]:
        """The outbox's backlog (terminal results waiting for the delivery service) and how many
        results a full outbox refused: two round trips."""
        pipe = self.results.pipeline(transaction=False)
        pipe.xlen(outbox_key(self.s))
        pipe.get(outbox_refused_key(self.s))
        backlog, refused = pipe.execute()
        waiting = GaugeMetricFamily(
            "inferq_outbox_backlog", "Terminal results waiting to be delivered (reply topics, webhooks)"
        )
        waiting.add_metric([], float(backlog or 0))
        yield waiting
        full = GaugeMetricFamily(
            "inferq_outbox_refused", "Terminal results never delivered because the outbox was full (ever)"
        )
        full.add_metric([], float(refused or 0))
        yield full

    # -- the result cache's own Redis -------------------------------------------------------------
    def _cache(self) -> Iterator[Metric]:
        if self.cache is None:
            return
        memory = self.cache.info("memory")
        used = GaugeMetricFamily("inferq_cache_used_bytes", "Memory the result cache's Redis uses")
        used.add_metric([], float(memory.get("used_memory", 0)))
        bound = GaugeMetricFamily("inferq_cache_max_bytes", "The result cache's maxmemory (0: none)")
        bound.add_metric([], float(memory.get("maxmemory", 0)))
        evicted = GaugeMetricFamily(
            "inferq_cache_evicted_keys", "Entries the result cache evicted for memory since it started"
        )
        evicted.add_metric([], float(self.cache.info("stats").get("evicted_keys", 0)))
        yield from (used, bound, evicted)

    # -- Celery queues --------------------------------------------------------------------------
    def _celery(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "inferq_celery_queue_depth",
            "Celery messages waiting in each model queue (every priority level)",
            labels=["queue"],
        )
        queues = {model_queue(self.s, m) for m in self.s.model_names()}
        for key in self.broker.scan_iter(match=f"{self.s.key_prefix}.model.*", count=100):
            name = key.decode() if isinstance(key, bytes) else key
            queues.add(queue_of(name))
        # every list of every queue in one round trip: the queue itself (priority 0) and one per step
        lists = {
            q: [priority_list(q, p) for p in sorted(set(CELERY_PRIORITY.values()))] for q in sorted(queues)
        }
        pipe = self.broker.pipeline(transaction=False)
        for names in lists.values():
            for name in names:
                pipe.llen(name)
        lengths = iter(pipe.execute())
        for q, names in lists.items():  # the order the lengths were asked in
            depth.add_metric([q], float(sum(next(lengths) for _ in names)))
        yield depth

    # -- local files ----------------------------------------------------------------------------
    def _spool(self) -> Iterator[Metric]:
        folder = spool_dir(self.s)
        size = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) if folder.is_dir() else 0
        g = GaugeMetricFamily("inferq_log_spool_bytes", "Log records on disk waiting for Elasticsearch")
        g.add_metric([], float(size))
        yield g

    # -- GPU --------------------------------------------------------------------------------------
    def _gpu(self) -> Iterator[Metric]:
        nvml = _nvml()
        if nvml is None:
            return
        util = GaugeMetricFamily("inferq_gpu_utilization_ratio", "GPU busy share", labels=["gpu"])
        used = GaugeMetricFamily("inferq_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("inferq_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(h)
            util.add_metric([str(i)], nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0)
            used.add_metric([str(i)], float(mem.used))
            total.add_metric([str(i)], float(mem.total))
        yield from (util, used, total)


_nvml_state: dict[str, Any] = {}


def _nvml() -> Any:
    """pynvml, initialised once; None without the package or a GPU."""
    if "module" not in _nvml_state:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_state["module"] = pynvml if pynvml.nvmlDeviceGetCount() > 0 else None
        except Exception:
            _nvml_state["module"] = None
    return _nvml_state["module"]


def build_registry(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    folder = metrics_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    MultiProcessCollector(registry, path=str(folder))
    registry.register(IntakeLiveness(settings, folder))  # the intakes whose files are in this folder
    if settings.metrics_read_live:  # pod sidecars serve only their pod's processes
        registry.register(PipelineCollector(settings))
    return registry


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "exporter")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # the API's bind address: loopback locally, 0.0.0.0 in a container
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.api_host, registry=build_registry(settings)
    )
    log.info("exporter serving http://%s:%d/metrics", settings.api_host, settings.metrics_port)
    stop.wait()
    server.shutdown()
    thread.join(5)
    stop_logging()


if __name__ == "__main__":
    main()
