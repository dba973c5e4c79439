"""The local stack's lifecycle: ``up`` (start in order, wait until ready, watch for an early death),
``down``, ``kill``, ``status``; one stack per state folder.

Each service runs in its own process group with its pid and start time recorded under
``<state_dir>/run`` (:mod:`ops.stack.processes`), so ``down`` stops exactly what ``up`` started and
never a recycled pid. Logs go to ``<state_dir>/logs/<service>.log``; data to ``<state_dir>/data``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from ops.stack import processes
from ops.stack.env import LOCAL_TRIM_EVERY_S, settings_env
from ops.stack.services import Service, ServiceTable
from ops.state import FLOWER_PASSWORD_FILE, keep_password, private_dir, read_password
from ops.topics import ensure_topics
from schemas.errors import StackError
from schemas.naming import metrics_dir
from schemas.settings import Settings

SETTLE_S = 1.5  # after readiness, how long `up` watches what it started for an early death
# a service restarted on its port may find it taken for a moment: while it was down, a client
# reconnecting to it can get that port as the local end of an outgoing connection (the ports the
# stack picks lie in the kernel's ephemeral range); such a start is tried again after a pause
PORT_TAKEN = "already in use"
PORT_RETRY_PAUSE_S = 0.5


class Stack(ServiceTable):
    """The local stack under one state folder."""

    def __init__(self, settings: Settings) -> None:
        trim_set = "kafka_trim_committed_every_s" in settings.model_fields_set
        if settings.local_kafka == "noida" and not trim_set:
            # noida-db rewrites its data file as the log changes, at a cost that grows with the log
            settings = settings.model_copy(update={"kafka_trim_committed_every_s": LOCAL_TRIM_EVERY_S})
        self.root = settings.state_dir.resolve()
        self.run_dir, self.log_dir, self.data_dir = self.root / "run", self.root / "logs", self.root / "data"
        self.flower_password_file: Path | None = None
        self._log_from: dict[str, int] = {}  # each service's log size when it was last started
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
        return processes.read_pid(self.run_dir / f"{name}.pid")

    def _spawn(self, svc: Service) -> None:
        log = self.log_dir / f"{svc.name}.log"
        self._log_from[svc.name] = log.stat().st_size if log.exists() else 0
        processes.spawn(
            svc.argv,
            {**self.env, **(svc.env or {})},
            self.root,
            self.log_dir / f"{svc.name}.log",
            self.run_dir / f"{svc.name}.pid",
        )

    def _wait_ready(self, svc: Service) -> None:
        give_up = time.monotonic() + svc.ready_timeout_s
        pause = 0.05
        while not svc.ready():
            if self.pid(svc.name) is None:
                if self._port_was_taken(svc) and time.monotonic() + PORT_RETRY_PAUSE_S < give_up:
                    time.sleep(PORT_RETRY_PAUSE_S)
                    self._spawn(svc)
                    continue
                raise StackError(f"{svc.name} exited while starting:\n{self.tail(svc.name)}")
            if time.monotonic() > give_up:
                raise StackError(
                    f"{svc.name} not ready after {svc.ready_timeout_s} s:\n{self.tail(svc.name)}"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def _port_was_taken(self, svc: Service) -> bool:
        """Whether the last start of ``svc`` ended because its port was in use (its own log since then)."""
        log = self.log_dir / f"{svc.name}.log"
        if not log.exists():
            return False
        with log.open("rb") as f:
            f.seek(self._log_from.get(svc.name, 0))
            return PORT_TAKEN in f.read(65_536).decode(errors="replace").lower()

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    @staticmethod
    def _stop(pid: int, timeout_s: float, sig: int = signal.SIGTERM) -> None:
        processes.stop(pid, timeout_s, sig)
