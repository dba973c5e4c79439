"""Sampling profiles of running services with py-spy, and their top self-time functions.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;frame count`` a line,
outermost first): flamegraph.pl, inferno and speedscope.app all open them. ``py-spy top`` is
interactive only, so the top list here is aggregated from those stacks: a function's *self* samples
are those where it is the innermost frame, its *total* those where it is anywhere on the stack.
Samples are of the thread holding the GIL (``--gil``): Python's CPU time, not threads waiting on a
socket or a lock (work in C that releases the GIL is not seen). py-spy attaches with ptrace (root,
or CAP_SYS_PTRACE); ``--nonblocking`` reads the target without pausing it, so the profile costs the
target little (py-spy's own CPU still takes a share of the box).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import StackError

RATE_HZ = 97  # samples a second (not a divisor of common timer rates, so no lockstep)
FRAME_LINE = re.compile(r":\d+\)$")


def pyspy_binary() -> str:
    """py-spy beside this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.is_file() else shutil.which("py-spy")
    if found is None:
        raise StackError("py-spy is not installed", hint="pip install 'inferq[dev]' (or pip install py-spy)")
    return found


class Recording:
    """One ``py-spy record`` of a process (and its subprocesses) until :meth:`stop`."""

    def __init__(self, name: str, pid: int, out: Path) -> None:
        self.name, self.pid, self.out = name, pid, out
        self.log = out.with_suffix(".log")
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    pyspy_binary(),
                    "record",
                    "--pid",
                    str(pid),
                    "--subprocesses",
                    "--nonblocking",
                    "--gil",
                    "--rate",
                    str(RATE_HZ),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def stop(self, timeout_s: float = 30.0) -> Path | None:
        """Stop recording (py-spy writes its file on SIGINT); the file, or None if none came."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        return self.out if self.out.is_file() and self.out.stat().st_size else None


def record_all(pids: dict[str, int], out_dir: Path) -> list[Recording]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Recording(name, pid, out_dir / f"{name}.collapsed.txt") for name, pid in pids.items()]


def function_of(frame: str) -> str:
    """``name (file:line)`` → ``name (file)``: lines of one function add up."""
    return FRAME_LINE.sub(")", frame.strip())


@dataclass(frozen=True)
class FunctionShare:
    function: str
    self_pct: float
    total_pct: float


def top_functions(lines: Iterable[str], n: int = 15) -> tuple[int, list[FunctionShare]]:
    """(samples, the ``n`` functions with the most self time) from collapsed stacks."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_s = line.rstrip("\n").rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [function_of(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += count
        self_samples[frames[-1]] += count
        for fn in set(frames):
            total_samples[fn] += count
    if not samples:
        return 0, []
    top = [
        FunctionShare(fn, 100.0 * c / samples, 100.0 * total_samples[fn] / samples)
        for fn, c in self_samples.most_common(n)
    ]
    return samples, top


def top_of_file(path: Path, n: int = 15) -> tuple[int, list[FunctionShare]]:
    with path.open(errors="replace") as f:
        return top_functions(f, n)
