"""The codebase stays ruff- and mypy-clean and its imports flow one way (ruff.toml, setup.cfg)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*argv):
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_clean():
    lint, fmt = run("ruff", "check", "."), run("ruff", "format", "--check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_clean():
    r = run("mypy", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_imports_flow_one_way():
    """The layer order and the light client (contracts in setup.cfg's ``[importlinter]``)."""
    r = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
