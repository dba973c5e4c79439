"""Padding waste of the batches a worker ran, read from its batch log records.

Every forward pass is logged by the worker (``workers.telemetry.events.log_batch``: ECS JSON lines
on stderr, which the local stack appends to ``<state_dir>/logs/worker*.log``) with its texts, real
tokens and padded tokens. :class:`BatchLog` remembers where each worker log ends, and reads the
batches logged since: so a bench phase gets exactly its own batches, whichever process ran them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 1 << 20  # a batch record is < 1 KiB; longer lines are someone else's


@dataclass(frozen=True)
class Batch:
    size: int
    tokens: int
    padded_tokens: int

    @property
    def padding_waste(self) -> float:
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


def _field(doc: dict[str, Any], dotted: str) -> Any:
    """``doc["a.b.c"]`` or ``doc["a"]["b"]["c"]`` (ECS formatters write either)."""
    if dotted in doc:
        return doc[dotted]
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            # a partly dotted key, e.g. {"inferq": {"batch.size": 3}}
            return _partly_dotted(doc, dotted)
        node = node[part]
    return node


def _partly_dotted(doc: dict[str, Any], dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        head, tail = ".".join(parts[:i]), ".".join(parts[i:])
        sub = doc.get(head)
        if isinstance(sub, dict):
            value = _field(sub, tail)
            if value is not None:
                return value
    return None


def parse_batch(line: str) -> Batch | None:
    """The batch of one log line, or None when the line is not a batch record."""
    if "padded_tokens" not in line or len(line) > MAX_LINE_BYTES:
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    values = [_field(doc, f"inferq.batch.{k}") for k in ("size", "tokens", "padded_tokens")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return None
    return Batch(*values)


class BatchLog:
    """The batches logged in ``log_dir``'s worker logs since :meth:`mark`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._offsets: dict[Path, int] = {}

    def _logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("worker*.log"))

    def mark(self) -> None:
        self._offsets = {p: p.stat().st_size for p in self._logs()}

    def since_mark(self) -> list[Batch]:
        batches = []
        for path in self._logs():
            with path.open("rb") as f:
                f.seek(self._offsets.get(path, 0))
                for raw in f:
                    batch = parse_batch(raw.decode("utf-8", errors="replace"))
                    if batch is not None:
                        batches.append(batch)
        return batches


def summarise_padding(batches: list[Batch]) -> dict[str, Any]:
    """Mean and max padding waste over batches, and padding's share of every token computed."""
    if not batches:
        return {"batches": 0, "mean": None, "max": None, "token_share": None, "mean_batch_size": None}
    wastes = [b.padding_waste for b in batches]
    padded = sum(b.padded_tokens for b in batches)
    return {
        "batches": len(batches),
        "mean": sum(wastes) / len(wastes),
        "max": max(wastes),
        "token_share": 1.0 - sum(b.tokens for b in batches) / padded if padded else 0.0,
        "mean_batch_size": sum(b.size for b in batches) / len(batches),
    }
