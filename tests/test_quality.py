"""The codebase stays ruff- and mypy-clean (config in ruff.toml and setup.cfg)."""

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
