"""Operations hardening on the real local stack (issue 15, points 3, 13 and 15).

- a crashing intake fails ``inferq-ops up`` and ``status``, and its crash is an ECS error record in
  the log store;
- the running intake's liveness is exported (``inferq_intake_up``) and read by ``status``;
- Flower (or anyone on the broker) cannot shut a worker down with the default settings;
- nothing in the state folder is readable by other users (Redis's AOF holds input texts).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from elasticsearch import Elasticsearch

from ops.stack import WORKER_PREFIX, Stack, on_free_ports
from schemas.messages import ResultStatus
from schemas.naming import log_index
from schemas.settings import Settings
from tests.stack import diagnose, eventually
from workers.transport.app import make_app

MODEL = "all-MiniLM-L6-v2"


def ops_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def intake_up(settings: Settings) -> dict[str, float]:
    """``inferq_intake_up`` by replica, as the exporter serves it."""
    out = {}
    for line in scrape(settings).splitlines():
        if line.startswith("inferq_intake_up{"):
            name, value = line.rsplit(" ", 1)
            out[name.split('replica="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def test_a_dead_intake_is_exported_down_and_a_crashing_one_fails_up_status_and_is_logged(tmp_path):
    base = Settings(kafka_partitions=1, kafka_session_timeout_ms=6_000, intake_stalled_after_s=3.0)
    s = on_free_ports(base, tmp_path / "state")
    st = Stack(s)
    try:
        st.up(only=["broker", "redis", "exporter", "intake"])
        replica = f"intake@{socket.gethostname()}"
        assert intake_up(s) == {replica: 1.0}  # ready means it has polled
        st.kill("intake", signal.SIGKILL)  # no goodbye: only the stamp's age tells
        eventually(lambda: intake_up(s) == {replica: 0.0}, 30, "inferq_intake_up to fall to 0")
        assert st.status()["intake"]["running"] is False

        # a bad setting the intake only meets after its logging is up: kafka-python refuses it
        env = {**st.env, "INFERQ_KAFKA_HEARTBEAT_INTERVAL_MS": "20000", "COLUMNS": "200"}
        up = ops_cli(env, "up", "--only", "intake")
        assert up.returncode != 0, up.stdout + up.stderr
        assert "intake" in up.stdout and "exited" in up.stdout, up.stdout
        assert "intake ready" not in up.stdout

        status = ops_cli(env, "status", "--json")
        assert status.returncode == 1
        assert json.loads(status.stdout)["intake"]["running"] is False
        assert json.loads(status.stdout)["broker"]["ready"] is True

        es = Elasticsearch(s.elasticsearch_url)

        def crash_record() -> list[dict]:
            es.indices.refresh(index=log_index(s))
            query = {
                "bool": {"filter": [{"term": {"service.name": "intake"}}, {"term": {"log.level": "error"}}]}
            }
            return [h["_source"] for h in es.search(index=log_index(s), query=query)["hits"]["hits"]]

        (doc,) = eventually(crash_record, 30, "the intake's crash record in Elasticsearch")
        assert doc["error"]["type"] == "KafkaConfigurationError", doc
        assert "Heartbeat interval" in doc["error"]["message"]
        assert "workers/intake/service.py" in doc["error"]["stack_trace"]
        assert doc["event"]["dataset"] == "inferq.crash"
    finally:
        st.down()


def scrape(settings: Settings) -> str:
    return httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).text


def test_the_intake_is_exported_up_while_it_polls_and_status_sees_it(stack, settings):
    replica = f"intake@{socket.gethostname()}"
    line = f'inferq_intake_up{{replica="{replica}"}} 1.0'
    assert eventually(lambda: line in scrape(settings), 30, "inferq_intake_up 1 for the intake"), diagnose(
        stack
    )
    assert "inferq_intake_last_poll_timestamp_seconds" in scrape(settings)
    assert stack.status()["intake"]["ready"] and stack.healthy()
    # the stack's Prometheus has the intake alerts and sees the intake up
    api = f"http://127.0.0.1:{settings.prometheus_port}/api/v1"
    groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
    assert {"InferqIntakeDown", "InferqIntakeStalled"} <= {r["name"] for g in groups for r in g["rules"]}

    def prometheus_sees_it_up() -> bool:
        answer = httpx.get(f"{api}/query", params={"query": "max(inferq_intake_up)"}, timeout=10).json()
        return [r["value"][1] for r in answer["data"]["result"]] == ["1"]

    eventually(prometheus_sees_it_up, 60, "Prometheus to scrape inferq_intake_up 1")


def test_flower_cannot_shut_a_worker_down_with_the_default_settings(stack, settings, client):
    assert settings.celery_remote_control is False
    pid = stack.pid("worker")
    node = f"{WORKER_PREFIX}-1@{socket.gethostname()}"
    base = f"http://127.0.0.1:{settings.flower_port}"
    auth = (settings.flower_user, settings.flower_password.get_secret_value())
    answer = httpx.post(f"{base}/api/worker/shutdown/{node}", auth=auth, timeout=30)
    assert answer.status_code in (200, 404), answer.text  # 404: Flower cannot even address it
    app = make_app(settings)
    app.control.broadcast("shutdown", destination=[node])  # nor can anyone else on the broker
    pool = app.control.broadcast("pool_restart", destination=[node], reply=True, timeout=2.0)
    assert pool == [], pool
    assert app.control.ping(timeout=2.0) == []  # no worker reads broadcasts at all

    rid = client.submit("embed", MODEL, "still serving after a shutdown broadcast")
    assert client.wait(rid, timeout_s=60).status is ResultStatus.DONE
    assert stack.pid("worker") == pid, diagnose(stack)
    assert stack.status()["worker"]["ready"]
    # Flower still shows the worker's tasks (from events), so it stays useful
    tasks = eventually(
        lambda: [
            t
            for t in httpx.get(f"{base}/api/tasks", auth=auth, timeout=10).json().values()
            if t["name"] == "inferq.infer" and t["state"] == "SUCCESS"
        ],
        30,
        "Flower to list a finished task",
    )
    assert tasks


def test_the_state_folder_is_private_to_its_owner(stack, settings, client):
    ids = [client.submit("embed", MODEL, f"private text {i}") for i in range(5)]
    assert all(r.status is ResultStatus.DONE for r in client.wait_all(ids, timeout_s=60).values())
    root = Path(settings.state_dir)

    def aof_written() -> list[Path]:
        return [p for p in (root / "data").rglob("*.aof") if p.stat().st_size > 0]

    aofs = eventually(aof_written, 30, "Redis's append-only file")
    assert any(b"private text" in p.read_bytes() for p in aofs)  # why it must be private
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    opened = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                opened.append(f"{path.relative_to(root)} {oct(mode)}")
    assert not opened, opened
    assert {p.name for p in (root / "logs").glob("*.log")} >= {"intake.log", "worker.log", "redis.log"}
