"""The client installs light (issue 16): what producers import, and what ``pip install inferq`` pulls.

A producer installs ``inferq[client]``: the client, ``inferq-submit`` and the schemas. Neither their
imports nor the core ``install_requires`` may bring torch, transformers, Celery, kombu, Flower,
FastAPI or scikit-learn; those belong to the worker, api and ops extras. The install itself, in a
fresh virtualenv, is tests/slow/test_client_install.py.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("torch", "transformers", "celery", "kombu", "flower", "fastapi", "sklearn")
HEAVY_PACKAGES = {"torch", "transformers", "celery", "kombu", "flower", "fastapi", "scikit-learn"}
EXTRAS = {"client", "worker", "api", "ops", "dev", "gpu"}

# every module a producer imports: the client, its CLI, auth, every schemas module and the Redis store
# the client reads results from (walked, so a new schemas module is covered without editing this)
IMPORT_CLIENT = f"""
import importlib, json, pkgutil, sys
import producers.client, producers.cli, producers.auth
import schemas, workers.store
for package in (schemas, workers.store):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(sorted(n for n in {HEAVY_MODULES!r} if n in sys.modules)))
"""


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def requirements(value: str) -> list[Requirement]:
    lines = (line.strip() for line in value.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def extras() -> dict[str, list[Requirement]]:
    return {name: requirements(value) for name, value in setup_cfg()["options.extras_require"].items()}


def closure(extra: str) -> set[str]:
    """Every package name an extra installs beyond the core, following ``inferq[...]`` references."""
    names: set[str] = set()
    for req in extras()[extra]:
        if canonicalize_name(req.name) == "inferq":
            for inner in req.extras:
                names |= closure(inner)
        else:
            names.add(canonicalize_name(req.name))
    return names


def test_importing_the_client_cli_and_schemas_loads_no_heavy_package():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", IMPORT_CLIENT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [], "a producer's import loads a worker-only package"


def test_install_requires_names_no_heavy_package():
    core = {canonicalize_name(r.name) for r in requirements(setup_cfg()["options"]["install_requires"])}
    assert core, "install_requires is empty: setup.cfg was not read"
    assert not core & HEAVY_PACKAGES, f"the core install pulls {sorted(core & HEAVY_PACKAGES)}"
    assert not closure("client") & HEAVY_PACKAGES


def test_each_role_has_its_extra_and_the_named_dependencies_stay():
    declared = extras()
    assert set(declared) >= EXTRAS
    for name, reqs in declared.items():
        for req in reqs:
            if canonicalize_name(req.name) == "inferq":
                assert req.extras <= set(declared), f"extra {name} refers to an undeclared {req}"
    core = {canonicalize_name(r.name) for r in requirements(setup_cfg()["options"]["install_requires"])}
    assert {"kafka-python", "redis", "pydantic"} <= core
    assert {"celery", "kombu", "torch", "transformers", "elasticsearch"} <= closure("worker")
    assert {"fastapi", "uvicorn", "elasticsearch"} <= closure("api")
    assert closure("worker") | closure("api") | {"flower", "noida-db"} <= closure("ops")
    assert closure("ops") | {"pytest", "import-linter"} <= closure("dev")


def test_images_and_bootstrap_install_declared_extras():
    declared = set(extras())
    deploy = ROOT / "ops" / "deploy"
    used = {
        name: set(m.split(","))
        for name in ("Dockerfile.cpu", "Dockerfile.gpu")
        for m in re.findall(r'pip install "\.\[([\w,]+)\]"', (deploy / name).read_text())
    }
    assert used == {"Dockerfile.cpu": {"ops"}, "Dockerfile.gpu": {"worker", "gpu"}}
    assert all(u <= declared for u in used.values())
    # the GPU image's command names the Celery app module that exists (it once named a moved one)
    apps = re.findall(r'"-A", "([\w.]+)"', (deploy / "Dockerfile.gpu").read_text())
    assert apps and all((ROOT / Path(*a.split("."))).is_dir() for a in apps)
    bootstrap = (ROOT / "ops" / "bootstrap.sh").read_text()
    default = re.search(r"INFERQ_BOOTSTRAP_EXTRAS:-(\w+)", bootstrap)
    assert default and default.group(1) == "dev" and 'pip_install -e ".[$extras]"' in bootstrap
    assert "setup.cfg" in re.search(r"want=.*", bootstrap).group(0)  # a changed setup.cfg reinstalls
