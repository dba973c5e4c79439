"""``pip install inferq[client]`` in a fresh virtualenv: the client and ``inferq-submit`` work, and
neither torch, transformers, Celery nor Flower is installed (issue 16, "the client installs light").

The sources are copied to a temporary folder first and installed from there (not editable), so the
test sees what a wheel ships (package data: the JSON Schemas, the store's Lua) and setuptools' build
folders never land in the checkout. It needs the package index pip is configured with; about half a
minute on a warm cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "schemas", "producers", "workers", "ops")
NOT_INSTALLED = {"torch", "transformers", "celery", "kombu", "flower", "fastapi", "scikit-learn"}

# run inside the installed venv: every module a producer imports, and the package data they read
CHECK = """
import importlib, importlib.resources, json, pkgutil, sys
import producers.client, producers.cli, producers.auth, schemas, workers.store
for package in (schemas, workers.store):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
shipped = importlib.resources.files("schemas") / "jsonschema"
print(json.dumps({
    "client": producers.client.__file__,
    "schemas": sorted(p.name for p in shipped.iterdir()),
    "lua": sorted(p.name for p in (importlib.resources.files("workers.store") / "lua").iterdir()),
}))
"""


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_client_extra_installs_without_torch_celery_or_flower(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    # the checkout must not leak in: no PYTHONPATH, and every command runs outside it
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    venv = tmp_path / "venv"
    py, bin_ = venv / "bin" / "python", venv / "bin"

    started = time.monotonic()
    made = run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    assert made.returncode == 0, made.stderr
    pip = run([str(py), "-m", "pip", "install", "-q", f"{src}[client]"], tmp_path, env)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    seconds = time.monotonic() - started

    listed = run([str(py), "-m", "pip", "list", "--format=json"], tmp_path, env)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "inferq" in installed
    assert not installed & NOT_INSTALLED, f"inferq[client] pulled {sorted(installed & NOT_INSTALLED)}"

    checked = run([str(py), "-c", CHECK], tmp_path, env)
    assert checked.returncode == 0, checked.stderr
    found = json.loads(checked.stdout.splitlines()[-1])
    assert Path(found["client"]).is_relative_to(venv), "imported the checkout, not the install"
    assert {"InferenceRequest.json", "InferenceResult.json"} <= set(found["schemas"])
    assert found["lua"] == sorted(p.name for p in (ROOT / "workers" / "store" / "lua").glob("*.lua"))

    torch = run([str(py), "-c", "import torch"], tmp_path, env)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr

    helped = run([str(bin_ / "inferq-submit"), "--help"], tmp_path, env)
    assert helped.returncode == 0, helped.stderr
    assert "inferq-submit" in helped.stdout

    site = next((venv / "lib").glob("python3*/site-packages"))
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 1e6
    # torch alone is ~700 MB: a light install stays far below it (about 95 MB with pip itself)
    assert size_mb < 250, f"inferq[client] installs {size_mb:.0f} MB"
    print(f"inferq[client]: {len(installed)} packages, {size_mb:.0f} MB site-packages, {seconds:.0f} s")
