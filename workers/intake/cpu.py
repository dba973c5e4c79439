"""How a process of the pipeline shares the CPU with the model on the same machine."""

from __future__ import annotations

import os


def yield_cpu(policy: str) -> bool:
    """With ``idle``, run this process (and the threads it starts later) at SCHED_IDLE.

    On a CPU box the model's forward pass uses every core; the intake's frequent short polls
    would preempt one of its threads and stall the whole pass at the next barrier (measured:
    batch-1 forward 27 → 46 ms beside a process busy 2.4 ms every 7.4 ms; unchanged at SCHED_IDLE).
    Idle-class work still runs whenever a core is free, which is when a forward pass ends.
    Returns whether the policy was applied (not on non-Linux systems).
    """
    if policy != "idle" or not hasattr(os, "sched_setscheduler"):
        return False
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return True
