"""Model runners: load a catalogue model onto a device and run batched forward passes."""

from workers.core.runners.base import LOADERS, Runner, load_runner

__all__ = ["LOADERS", "Runner", "load_runner"]
