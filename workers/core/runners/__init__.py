"""Model runners: load a catalogue model onto a device and run batched forward passes."""

from workers.core.runners.base import Runner, load_runner

__all__ = ["Runner", "load_runner"]
