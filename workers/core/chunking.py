"""How many prompt columns a joining prefill runs per iteration while other sequences decode.

The running sequences get no token while a chunk runs, so a chunk should cost about
``stall_steps`` of their decode steps, whatever the device: on a GPU a decode step is a few ms of
fixed cost and a chunk of hundreds of tokens costs about one step; on a CPU every token costs its
share and the same chunk costs many steps. Prefill passes are timed into a
:class:`~workers.core.wait_policy.CostModel` (``ms ≈ per_token · tokens + per_pass``, tokens =
rows × columns; calibrated by a few prefills at start), decode steps into a moving average of
their own; the chunk is the most tokens whose predicted time fits ``stall_steps`` of that average.
Kept apart because decode steps (rows tokens each, all alike) would swamp the prefill fit. Until
both are known, and when ``stall_steps`` is 0, the chunk is the fixed ``max_tokens``. Times in ms.

Chunks protect the running sequences; when more sequences join than run (a burst arriving while a
few decode), chunking would hold up more sequences than it spares, so the prefill goes whole.

Invariants: a chunk is at least one column and at most ``max_tokens`` tokens (split over the
joining rows, at least one column each), never past the prompt; timings that are not finite and
positive are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from workers.core.wait_policy import CostModel

# (rows, columns) of the timed prefills at start: one short and one long prompt, one and four rows,
# each twice (the first pass at a shape can pay one-off allocation)
CALIBRATION: tuple[tuple[int, int], ...] = ((1, 8), (1, 64), (4, 8), (1, 128)) * 2
STEP_WEIGHT = 0.2  # of the latest decode step in the moving average
MAX_SLOWDOWN = 8.0  # how far one pass's overrun may scale the next chunk, either way


class ChunkSizer:
    """Sizes prefill chunks by the fitted cost of a forward pass (see the module docstring)."""

    def __init__(self, max_tokens: int, stall_steps: float, cost: CostModel | None = None) -> None:
        """``max_tokens``: the largest chunk (0 = whole prompts, never chunked); ``stall_steps``:
        what a chunk may cost, in decode steps of the running batch (0 = always ``max_tokens``)."""
        self.max_tokens = max_tokens
        self.stall_steps = stall_steps
        self.cost = cost or CostModel()  # prefill passes only
        self.step_ms: float | None = None  # decode steps: moving average
        # the last prefill pass's time over the fit's prediction: a prompt's later chunks also attend
        # over everything before them, which a fit linear in new tokens does not see
        self.slowdown = 1.0

    def calibrate(
        self, run_ms: Callable[[int, int], float], shapes: Sequence[tuple[int, int]] = CALIBRATION
    ) -> None:
        """Time prefills of each (rows, columns) so the first chunk is sized by a fitted model."""
        self.cost.calibrate(run_ms, shapes)

    def observe_prefill(self, rows: int, columns: int, ms: float) -> None:
        """A prefill pass of ``rows`` × ``columns`` new tokens took ``ms``."""
        if not (math.isfinite(ms) and ms > 0):
            return
        rates = self.cost.rates()
        if rates is not None and rates[0] > 0:
            predicted = rates[1] + rates[0] * rows * columns
            self.slowdown = min(MAX_SLOWDOWN, max(1.0 / MAX_SLOWDOWN, ms / predicted))
        self.cost.observe(rows * columns, rows, ms)

    def observe_step(self, ms: float) -> None:
        """A decode step of the running batch took ``ms``."""
        if math.isfinite(ms) and ms > 0:
            self.step_ms = ms if self.step_ms is None else (1 - STEP_WEIGHT) * self.step_ms + STEP_WEIGHT * ms

    def columns(self, joining_rows: int, running_rows: int, width: int, done: int = 0) -> int:
        """Columns of a prefill of ``joining_rows`` with ``width`` columns left (``done`` already
        run) to run in the next iteration, while ``running_rows`` sequences wait for their next
        token: all of it when nobody runs, or when more join than run (a burst arriving behind a
        few running sequences). A later chunk is scaled by how far the last pass overran the fit."""
        if running_rows == 0 or self.max_tokens <= 0 or joining_rows > running_rows:
            return width  # chunks would hold up more joiners than the running sequences they spare
        cap = max(1, self.max_tokens // joining_rows)
        rates, step_ms = self.cost.rates(), self.step_ms
        if self.stall_steps <= 0 or rates is None or rates[0] <= 0 or step_ms is None:
            return min(width, cap)
        per_token, per_pass = rates
        budget_ms = self.stall_steps * step_ms / (self.slowdown if done else 1.0)
        fits = int((budget_ms - per_pass) / per_token) // joining_rows
        return min(width, cap, max(1, fits))
