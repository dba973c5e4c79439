"""``inferq-ops bench --ceiling`` end to end with a tiny burst: a real stack serving echo-384, the
load generator and collector in their own processes, CPU from /proc, and the py-spy profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.bench.ceiling_report import GROUPS
from ops.cli import main
from ops.stack import Stack
from schemas.settings import Settings, get_settings


@pytest.fixture
def fresh_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("INFERQ_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_ceiling_runs_end_to_end_with_a_tiny_burst(fresh_settings, tmp_path: Path):
    out = tmp_path / "out"
    argv = ["bench", "--ceiling", "--quick", "--ceiling-layouts", "1x1", "--burst-s", "2", "--profile"]
    argv += ["--generators", "2"]  # two publishers: each id of the burst from exactly one
    argv += ["--ceiling-webhooks"]  # every request names a callback_url to the bench's receiver
    assert main([*argv, "--out", str(out)]) == 0

    data = json.loads((out / "bench.json").read_text())
    assert data["ceiling_req_per_s"] > 0
    assert data["ceiling_lost"] == 0 and data["ceiling_duplicated"] == 0
    cpu = data["ceiling_cpu_ms_per_request"]
    assert set(cpu) == set(GROUPS)
    assert all(cpu[g] > 0 for g in ("client", "intake", "redis", "worker"))  # every process did work
    assert cpu["total"] == pytest.approx(sum(v for g, v in cpu.items() if g != "total"))
    (row,) = data["ceiling_scaling"]
    assert (row["intake_replicas"], row["worker_processes"]) == (1, 1) and row["req_per_s"] > 0
    head = data["ceiling"]["headline"]
    assert head["by_status"] == {"done": head["requests"]}  # every request, exactly once, done
    # --ceiling-webhooks: each request's result POSTed to the receiver (whose CPU is in no group)
    assert head["webhooks_received"] == head["requests"] and head["webhooks_s"] > 0
    assert head["receiver_cpu_ms_per_request"] > 0 and cpu["delivery"] > 0

    for name in ("intake", "worker"):  # the profile: collapsed stacks and a top list per process
        prof = head["profile"][name]
        assert prof["samples"] > 0 and prof["top"], prof
        assert Path(prof["file"]).is_file()
    # each generator publishes its share in about 0.1 s (py-spy at 97 Hz, idle frames dropped): one of
    # them may get no sample at all; the client's processes together always do
    client = [p for n, p in head["profile"].items() if n.startswith("client-")]
    assert sum(p["samples"] for p in client) > 0 and any(p["top"] for p in client), client

    # the stack is gone
    ceiling = Stack(Settings(state_dir=tmp_path / "state" / "ceiling"))
    assert not any(st["running"] for st in ceiling.status().values())
