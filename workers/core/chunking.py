"""How many prompt columns a joining prefill runs per iteration while other sequences decode.

The running sequences get no token while a chunk runs, so a chunk should cost about
``stall_steps`` of their decode steps, whatever the device: on a GPU a decode step is a few ms of
fixed cost and a chunk of hundreds of tokens costs about one step; on a CPU every token costs its
share and the same chunk costs many steps. Both kinds of pass are timed into one
:class:`~workers.core.wait_policy.CostModel` (``ms ≈ per_token · tokens + per_pass``, tokens =
rows × columns), and the chunk is the most tokens whose predicted time fits the budget. Until the
model is fitted, and when ``stall_steps`` is 0, the chunk is the fixed ``max_tokens``. Times in ms.

Invariants: a chunk is at least one column and at most ``max_tokens`` tokens (split over the
joining rows, at least one column each); the decision reads only the fitted rates and the two
row counts, so it is a pure function of what was observed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.core.wait_policy import CostModel

# (rows, columns) of the timed prefills at start: one short and one long prompt, one and four rows,
# each twice (the first pass at a shape can pay one-off allocation)
CALIBRATION: tuple[tuple[int, int], ...] = ((1, 8), (1, 64), (4, 8), (1, 128)) * 2


class ChunkSizer:
    """Sizes prefill chunks by the fitted cost of a forward pass (see the module docstring)."""

    def __init__(self, max_tokens: int, stall_steps: float, cost: CostModel | None = None) -> None:
        """``max_tokens``: the largest chunk (0 = whole prompts, never chunked); ``stall_steps``:
        what a chunk may cost, in decode steps of the running batch (0 = always ``max_tokens``)."""
        self.max_tokens = max_tokens
        self.stall_steps = stall_steps
        self.cost = cost or CostModel()

    def calibrate(
        self, run_ms: Callable[[int, int], float], shapes: Sequence[tuple[int, int]] = CALIBRATION
    ) -> None:
        """Time prefills of each (rows, columns) so the first chunk is sized by a fitted model."""
        self.cost.calibrate(run_ms, shapes)

    def observe(self, rows: int, columns: int, ms: float) -> None:
        """A forward pass of ``rows`` × ``columns`` new tokens took ``ms`` (decode: columns = 1)."""
        self.cost.observe(rows * columns, rows, ms)

    def columns(self, joining_rows: int, running_rows: int, width: int) -> int:
        """Columns of a ``width``-column prefill of ``joining_rows`` to run in the next iteration,
        while ``running_rows`` sequences wait for their next token (none: the whole prefill)."""
        if running_rows == 0 or self.max_tokens <= 0:
            return width
        cap = max(1, self.max_tokens // joining_rows)
        rates = self.cost.rates()
        if self.stall_steps <= 0 or rates is None or rates[0] <= 0:
            return min(width, cap)
        per_token, per_pass = rates
        budget_ms = self.stall_steps * (per_pass + per_token * running_rows) - per_pass
        fits = int(budget_ms / per_token) // joining_rows
        return min(width, cap, max(1, fits))
