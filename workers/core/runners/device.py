"""Device choice and CPU threading, decided once per worker process."""

from __future__ import annotations

import os

import torch

from schemas.errors import ConfigurationError
from schemas.settings import Settings


def choose_device(settings: Settings) -> torch.device:
    """``auto`` → the first CUDA device when one is present, else the CPU."""
    want = settings.device.strip().lower()
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(
            f"INFERQ_DEVICE={settings.device!r} but torch sees no CUDA device",
            hint="set INFERQ_DEVICE=auto or cpu, or install the CUDA build of torch (extra 'gpu')",
        )
    try:
        return torch.device(want)
    except RuntimeError as e:
        raise ConfigurationError(f"INFERQ_DEVICE={settings.device!r} is not a torch device") from e


def threads_per_process(settings: Settings) -> int:
    """The setting, or this host's cores shared out between its worker processes."""
    return settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_processes)


def configure_threads(settings: Settings) -> int:
    """Set torch's intra-op threads (CPU); returns the number set.

    Several one-thread processes beat one process with many threads on a small CPU: a forward
    pass split over threads waits at each barrier for the slowest, and any other work on the
    box (broker, Redis, intake, tokenising) makes one of them slow.
    """
    n = threads_per_process(settings)
    torch.set_num_threads(n)
    return n


def dtype_for(device: torch.device) -> torch.dtype:
    """Half precision on GPUs (bf16 where supported), fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
