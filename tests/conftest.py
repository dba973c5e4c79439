"""Test tiers by folder, and the shared environment.

- tests/integration/** is marked ``integration``: a real local stack (tests/stack.py) or a real model
  load (tests/integration/models);
- tests/slow/** is marked ``slow``: the fault drills, the poison drill, Tansu, scale (minutes each);
- everything else is the fast tier: ``pytest -m "not integration and not slow"``, no stack, no model.

A plain ``pytest`` (the README's command, run by .ci/run) runs all three. The markers come from the
folder so that a new file cannot forget its own; the stack's fixtures are a plugin loaded here
(``pytest_plugins``) so both the integration and the slow folders reach them, and they start nothing
until a test asks for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Weights ship inside packages; nothing may be fetched from a hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["tests.stack"]

HERE = Path(__file__).resolve().parent
TIERS = {HERE / "integration": pytest.mark.integration, HERE / "slow": pytest.mark.slow}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        for folder, mark in TIERS.items():
            if path.is_relative_to(folder):
                item.add_marker(mark)
