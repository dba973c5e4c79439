"""What a model runner is, and how the worker gets one by name from the catalogue."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from schemas.catalog import CATALOG
from schemas.errors import ConfigurationError, UnknownModel
from schemas.messages import InferenceRequest, Output, Task
from schemas.settings import Settings


class Runner(Protocol):
    """A loaded model. ``tokenize`` runs on the caller's thread, ``forward`` on the model thread.

    Splitting them lets the worker tokenise new requests while the previous batch is in the
    forward pass, and lets the batcher count real tokens.
    """

    name: str
    task: Task
    version: str  # "<name>@<digest of the weights>": stamped on every result
    device: str

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to the model's limit (one call: the fast tokenizer
        works through a list far quicker than text by text)."""
        ...

    def forward(self, batch: Sequence[Sequence[int]]) -> Any:
        """One forward pass over token-id lists; returns one row per input, in order."""
        ...

    def output(self, row: Any, request: InferenceRequest) -> Output:
        """The wire output for one input from its row of :meth:`forward`."""
        ...


def file_digest(*paths: Path, length: int = 12) -> str:
    """Short sha256 over files' bytes: the version stamp of a set of weights."""
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:length]


# catalogue model → "module:function" returning its Runner; imported on first use, so that a
# worker loads only the libraries of the models it serves
LOADERS: dict[str, str] = {
    "all-MiniLM-L6-v2": "workers.core.runners.embed:load_minilm",
    "minilm-intent": "workers.core.runners.classify:load_minilm_intent",
    "tiny-lm": "workers.core.runners.causal:load_tiny_lm",
    "causal-lm": "workers.core.runners.causal:load_causal_lm",
    "echo-384": "workers.core.runners.echo:load_echo",
    "smollm2-135m-instruct": "workers.core.runners.smollm:load_smollm2",
}


# "<model>@<variant>" → "module:function": other builds of a catalogue model, served as their own
# versions beside (or instead of) its default build (INFERQ_WORKER_MODELS, schemas.versions)
VARIANTS: dict[str, str] = {
    "all-MiniLM-L6-v2@int8": "workers.core.runners.quantized:load_minilm_int8",
}


def load_runner(name: str, settings: Settings) -> Runner:
    """Load catalogue model ``name`` (or a variant, ``<model>@<variant>``) with its registered loader."""
    if "@" in name:
        if name not in VARIANTS:
            known = ", ".join(sorted(VARIANTS)) or "none"
            raise UnknownModel(f"this worker was asked to load unknown variant {name!r}; known: {known}")
        spec = VARIANTS[name]
    elif name not in CATALOG or name not in LOADERS:
        raise UnknownModel(f"this worker was asked to load unknown model {name!r}")
    else:
        spec = LOADERS[name]
    module_name, _, func_name = spec.partition(":")
    try:
        loader = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        raise ConfigurationError(
            f"loader {spec!r} of model {name!r} cannot be imported",
            hint="install the package that ships this model's weights (see setup.cfg)",
        ) from e
    runner: Runner = loader(settings)
    return runner
