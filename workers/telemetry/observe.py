"""Hooks that turn pipeline events into log records and metrics, attached at process start.

The core loops only call hooks (the store's result hooks, the engine's batch hooks, the
decoder's step hooks); what the
hooks do lives here, so logging and metrics never sit inline in the hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.core.engine import BatchStats
from workers.store.store import ResultStore
from workers.telemetry.events import log_batch, log_result
from workers.telemetry.metrics import record_batch, record_refused, record_result, record_step

if TYPE_CHECKING:  # the decoder imports torch; the intake and the API must not
    from workers.core.sequences import StepStats


def observe_store(store: ResultStore) -> ResultStore:
    """Log and count every result this process makes terminal."""
    for hook in (log_result, record_result):
        if hook not in store.hooks:
            store.hooks.append(hook)
    if record_refused not in store.refused_hooks:
        store.refused_hooks.append(record_refused)
    return store


def on_batch(stats: BatchStats) -> None:
    """The engine's batch hook: one log record and the batch histograms."""
    log_batch(
        model=stats.model,
        model_version=stats.model_version,
        batch_id=stats.batch_id,
        size=stats.size,
        tokens=stats.tokens,
        padded_tokens=stats.padded_tokens,
        padding_waste=stats.padding_waste,
        compute_ms=stats.compute_ms,
        failed=stats.failed,
        device=stats.device,
    )
    record_batch(stats.model, stats.size, stats.tokens, stats.padding_waste, stats.compute_ms)


def on_step(stats: StepStats) -> None:
    """The decoder's step hook: generated tokens and sequences per step (no log record: a step is
    a few ms; each request's record carries its totals)."""
    record_step(stats.model, stats.running)
