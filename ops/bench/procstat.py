"""CPU time of processes and their trees, read from ``/proc/<pid>/stat`` (Linux).

A process's CPU is ``utime + stime`` (its own, all threads) plus ``cutime + cstime`` (children it
has waited for), in clock ticks (``SC_CLK_TCK`` a second). Summing that over a living process tree
counts every process once: a child that exited and was reaped is in its parent's ``c*`` fields, a
living one only in its own. So a Celery worker's pool children, or any helper it forks, count with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcStat:
    """The fields of one ``/proc/<pid>/stat`` line this module uses (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int

    @property
    def ticks(self) -> int:
        """Own CPU (all threads) plus that of reaped children, in clock ticks."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(line: str) -> ProcStat:
    """Parse one stat line. ``comm`` (field 2) is in parentheses and may itself hold spaces and
    ``)``, so the fields after it are split from the *last* ``)``. Raises ValueError on a line that
    is not a stat line."""
    head, sep, tail = line.rpartition(")")
    pid_s, paren, comm = head.partition(" (")
    if not sep or not paren:
        raise ValueError(f"not a /proc/<pid>/stat line: {line[:80]!r}")
    f = tail.split()
    if len(f) < 20:
        raise ValueError(f"a /proc/<pid>/stat line with {len(f)} fields after comm (want ≥ 20)")
    # after comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14) … starttime(19)
    return ProcStat(
        int(pid_s), comm, f[0], int(f[1]), int(f[11]), int(f[12]), int(f[13]), int(f[14]), int(f[19])
    )


def read_stat(pid: int, proc: Path = PROC) -> ProcStat | None:
    """The stat of ``pid``, or None once it is gone."""
    try:
        return parse_stat((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None


def all_stats(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat, by pid (processes that vanish while being read are left out)."""
    out: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            st = read_stat(int(entry.name), proc)
            if st is not None:
                out[st.pid] = st
    return out


def tree(root: int, stats: Mapping[int, ProcStat]) -> list[int]:
    """``root`` and its living descendants (pids), from a snapshot of ``stats``."""
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    if root not in stats:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_ms(roots: Iterable[int], stats: Mapping[int, ProcStat]) -> float:
    """CPU milliseconds of the trees under ``roots`` (a pid under two roots counts once)."""
    pids = {pid for root in roots for pid in tree(root, stats)}
    return sum(stats[p].ticks for p in pids) * 1000.0 / TICKS_PER_S


def groups_ms(groups: Mapping[str, Iterable[int]], proc: Path = PROC) -> dict[str, float]:
    """CPU milliseconds so far of each named group of process trees, from one snapshot of /proc."""
    stats = all_stats(proc)
    return {name: tree_ms(roots, stats) for name, roots in groups.items()}
