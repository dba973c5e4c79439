"""Liveness you can see (issue 15, point 3): crashes become ECS error records, the intake's polls
are stamped and exported, and ``up`` notices a service that dies right after its readiness check."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ops.stack import Service, Stack
from schemas.errors import StackError
from schemas.settings import Settings
from workers.telemetry.liveness import IntakeLiveness, last_polls

ASSETS = Path(__file__).resolve().parents[3] / "ops" / "assets" / "prometheus"

CRASHING = """
import threading
from workers.telemetry.logs import configure_logging
from schemas.settings import Settings

configure_logging(Settings(log_ship=False), "crasher")

def work():
    raise KeyError("in a thread")

t = threading.Thread(target=work, name="side-job")
t.start()
t.join()
raise ValueError("bad setting at start")
"""


def ecs_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_an_uncaught_exception_is_one_ecs_error_record_with_its_stack_trace(tmp_path):
    script = tmp_path / "crasher.py"
    script.write_text(CRASHING)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1  # the process still dies as before
    docs = ecs_lines(proc.stderr)
    assert len(docs) == 2, proc.stderr  # one record per crash, and nothing else on stderr
    assert all(line.startswith("{") for line in proc.stderr.splitlines() if line), proc.stderr
    thread, main = docs
    assert thread["log.level"] == "error" and thread["error"]["type"] == "KeyError"
    assert "side-job" in thread["message"] and "in a thread" in thread["error"]["message"]
    assert main["log.level"] == "error" and main["error"]["type"] == "ValueError"
    assert main["error"]["message"] == "bad setting at start"
    assert 'raise ValueError("bad setting at start")' in main["error"]["stack_trace"]
    assert main["service"]["name"] == "crasher" and main["event"]["dataset"] == "inferq.crash"


STAMP = """
from workers.telemetry.liveness import record_poll
from schemas.settings import Settings
record_poll(Settings(kafka_group_instance_id="intake@test"))
"""


def test_each_intake_poll_is_stamped_and_exported_as_up_until_it_goes_stale(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    before = time.time()
    subprocess.run([sys.executable, "-c", STAMP], env=env, check=True, timeout=60)
    polls = last_polls(tmp_path)
    assert set(polls) == {"intake@test"} and before <= polls["intake@test"] <= time.time()

    def sample(settings: Settings) -> dict[str, float]:
        return {
            f"{m.name}{{{s.labels['replica']}}}": s.value
            for m in IntakeLiveness(settings, tmp_path).collect()
            for s in m.samples
        }

    fresh = sample(Settings())
    assert fresh["inferq_intake_up{intake@test}"] == 1.0
    assert 0 <= fresh["inferq_intake_last_poll_age_seconds{intake@test}"] < 60
    stale = sample(Settings(intake_stalled_after_s=1e-6))  # the process is gone: its stamp ages
    assert stale["inferq_intake_up{intake@test}"] == 0.0
    assert next(iter(IntakeLiveness(Settings(), tmp_path / "none").collect())).samples == []
    # a process that has just started has an empty file: read past, not a crash of `up`/`status`
    (tmp_path / "gauge_mostrecent_999999.db").write_bytes(b"")
    assert set(last_polls(tmp_path)) == {"intake@test"}


def test_alerts_fire_on_a_dead_or_stalled_intake():
    rules = {r["alert"]: r for r in yaml.safe_load((ASSETS / "alerts.yml").read_text())["groups"][0]["rules"]}
    assert "absent(inferq_intake_up)" in rules["InferqIntakeDown"]["expr"]  # never polled at all
    assert "inferq_intake_last_poll_timestamp_seconds" in rules["InferqIntakeStalled"]["expr"]


class FakeStack(Stack):
    """A stack of stand-in processes (real ones, started and watched by the real code)."""

    def __init__(self, settings: Settings, services: list[Service]) -> None:
        super().__init__(settings)
        self._fake = services

    def services(self) -> list[Service]:
        return self._fake


def test_up_fails_when_a_service_dies_right_after_its_readiness_check(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    dies = Service(
        "dies", [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"], lambda: True
    )
    lives = Service("lives", [sys.executable, "-c", "import time; time.sleep(60)"], lambda: True)
    st = FakeStack(settings, [lives, dies])
    try:
        with pytest.raises(StackError, match="dies exited right after starting"):
            st.up(settle_s=5.0)
        status = st.status()
        assert status["lives"]["running"] and not status["dies"]["running"]
        assert not st.healthy(status)
    finally:
        st.down()


def test_up_passes_services_that_stay_up_and_status_is_healthy(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    lives = Service("lives", [sys.executable, "-c", "import time; time.sleep(60)"], lambda: True)
    st = FakeStack(settings, [lives])
    try:
        st.up(settle_s=0.5)
        assert st.healthy()
        st.kill("lives", signal.SIGKILL)
        deadline = time.monotonic() + 10
        while st.pid("lives") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not st.healthy()
    finally:
        st.down()


def test_the_state_folder_and_flower_password_are_private(tmp_path):
    state = tmp_path / "state"
    made = state / "made-by-child"
    code = "import time; open('made-by-child', 'w').write('x'); time.sleep(60)"
    sleeper = Service("s", [sys.executable, "-c", code], made.exists)
    st = FakeStack(Settings(state_dir=state), [sleeper])
    try:
        st.up(settle_s=0.0)
    finally:
        st.down()
    for d in (state, state / "run", state / "logs", state / "data", state / "metrics"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in (state / "flower.password", state / "logs" / "s.log"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    # the service ran under umask 077 (what Redis's append-only file relies on)
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    password = (state / "flower.password").read_text().strip()
    assert len(password) >= 20 and password != "inferq-local"
    again = Stack(Settings(state_dir=state))
    assert again.s.flower_password.get_secret_value() == password  # one per folder, kept
    assert again.flower_login()["password_file"] == str(state / "flower.password")
    other = Stack(Settings(state_dir=tmp_path / "other"))
    assert other.s.flower_password.get_secret_value() != password
    chosen = Stack(Settings(state_dir=tmp_path / "x", flower_password="mine-123456"))
    assert chosen.flower_login()["password_file"] is None


def test_a_start_that_finds_its_port_taken_is_tried_again_once_the_port_is_free(tmp_path):
    # a restarted broker's port held a moment by a client's outgoing connection (seen in a drill run)
    settings = Settings(state_dir=tmp_path / "state")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    listen = (
        "import socket, time\n"
        "s = socket.socket()\n"
        "try:\n"
        f"    s.bind(('127.0.0.1', {port}))\n"
        "except OSError:\n"
        f"    print('error: port {port} is already in use', flush=True)\n"
        "    raise SystemExit(1)\n"
        "s.listen()\n"
        "time.sleep(60)\n"
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    server = Service("server", [sys.executable, "-c", listen], listening, ready_timeout_s=20.0)
    st = FakeStack(settings, [server])
    lets_go = threading.Timer(1.5, holder.close)  # the client lets go of the port
    lets_go.start()
    try:
        st.up(settle_s=0.5)
        assert st.healthy() and listening()
        assert st.tail("server").count("already in use") >= 2  # refused, tried again, then up
    finally:
        lets_go.cancel()
        holder.close()
        st.down()


def test_a_start_that_fails_for_another_reason_is_not_tried_again(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    boom = Service(
        "boom", [sys.executable, "-c", "print('bad config', flush=True); raise SystemExit(2)"], lambda: False
    )
    st = FakeStack(settings, [boom])
    try:
        with pytest.raises(StackError, match="boom exited while starting"):
            st.up(settle_s=0.5)
        assert st.tail("boom").count("bad config") == 1
    finally:
        st.down()
