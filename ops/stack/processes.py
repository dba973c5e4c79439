"""Child processes of the local stack: each in its own process group, its pid recorded with the
kernel's start time so a recycled pid is never taken for it (nor signalled)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ops.state import PRIVATE_UMASK, open_private_log, write_private


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def read_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process still runs (same start time), else None."""
    try:
        pid_s, started = path.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    return pid if start_time(pid) == started and not is_zombie(pid) else None


def spawn(argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, pid_path: Path) -> None:
    """Start ``argv`` in a new session, output appended to ``log_path``, its pid and start time
    written (0600) to ``pid_path``."""
    log = os.fdopen(open_private_log(log_path), "ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
        umask=PRIVATE_UMASK,  # data files (Redis's AOF holds input texts), spools, metrics: 0600
    )
    log.close()
    write_private(pid_path, f"{proc.pid} {start_time(proc.pid)}\n")


def stop(pid: int, timeout_s: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group of ``pid``; SIGKILL it if it is still there after ``timeout_s``."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if start_time(pid) is None or is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
