"""The model loops of a worker process: which loop serves a model, and one of each per model.

An encoder's runner gets the dynamic batcher (:class:`~workers.core.engine.Engine`), a causal
LM's the continuous-batching :class:`~workers.core.decoder.Decoder`; past this module both are a
:class:`~workers.core.loop.ModelLoop`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from schemas.observer import Observer
from schemas.settings import Settings
from workers.core.batcher import BatchPolicy
from workers.core.cache import CacheKeys
from workers.core.decoder import Decoder
from workers.core.engine import Engine
from workers.core.loop import ModelLoop, Outlet
from workers.core.runners import load_runner
from workers.core.runners.causal import CausalLM
from workers.core.sequences import DecodePolicy
from workers.core.wait_policy import AdaptiveWait, CostModel, FixedWait, WaitPolicy
from workers.store.cache import ResultCache
from workers.store.store import ResultStore

log = logging.getLogger(__name__)


def build_loop(
    model: str,
    settings: Settings,
    store: ResultStore,
    observer: Observer,
    outlet: Outlet,
    cache: ResultCache | None = None,
) -> ModelLoop:
    """Load ``model``'s runner and start the loop that serves it (raises
    :class:`~schemas.errors.InferqError` when this worker cannot serve the model). ``cache``: the
    result cache (None: off)."""
    s = settings
    runner = load_runner(model, s)
    keys = CacheKeys(s, runner.version) if cache is not None else None
    if isinstance(runner, CausalLM):
        policy = DecodePolicy(
            s.generate_max_running,
            s.generate_max_batch_tokens,
            s.generate_max_new_tokens,
            s.generate_max_prompt_tokens,
            s.generate_stream_interval_ms,
            static=s.generate_batching == "static",
            static_wait_ms=s.generate_static_wait_ms,
            prefill_chunk_tokens=s.generate_prefill_chunk_tokens,
            prefill_stall_steps=s.generate_prefill_stall_steps,
        )
        return Decoder(
            runner,
            store,
            policy,
            s.max_attempts,
            observer=observer,
            outlet=outlet,
            cache=cache,
            cache_keys=keys,
        )
    batch = BatchPolicy(s.max_batch_size, s.max_batch_tokens, s.max_wait_ms, s.priority_aging_ms)
    cost = CostModel()
    wait: WaitPolicy = (
        AdaptiveWait(cost, s.target_latency_ms, s.max_wait_ms)
        if s.batch_wait == "adaptive"
        else FixedWait(s.max_wait_ms)
    )
    return Engine(runner, store, batch, wait, cost, s.max_attempts, observer, outlet, cache, keys)


class ModelLoops:
    """One loop per model, created on first use (thread-safe: Celery's task threads ask at once;
    a model loads once, under the lock)."""

    def __init__(self, build: Callable[[str], ModelLoop]) -> None:
        self._build = build
        self._loops: dict[str, ModelLoop] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> ModelLoop:
        with self._lock:
            if model not in self._loops:
                self._loops[model] = self._build(model)
            return self._loops[model]

    def close(self) -> None:
        """Finish what every loop runs and holds, then stop them (at shutdown)."""
        with self._lock:
            loops = list(self._loops.values())
        for loop in loops:
            try:
                loop.close()
            except Exception:
                log.exception("a model loop failed to close")
