"""What a model's serving loop is, to the process that runs it, and what it hands back.

Both loops (the embedding :class:`~workers.core.engine.Engine` and the generation
:class:`~workers.core.decoder.Decoder`) are a :class:`ModelLoop`: callers submit work items and
wait on the returned jobs, the loop runs on its own thread, and the process warms it up at start
and closes it at shutdown. What a loop gives out besides results in the store goes to one
:class:`Outlet` given to its constructor (the worker's runtime implements it: dead letters, the
Kafka stream); telemetry goes to the :class:`~schemas.observer.Observer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from schemas.work import WorkItem
from workers.core.jobs import Job
from workers.core.sequences import Chunk


class ModelLoop(Protocol):
    """One model's serving loop, on its own thread."""

    def submit(self, items: Sequence[WorkItem], first_delivery: bool = False) -> list[Job]:
        """Tokenise (on the caller's thread) and queue; one job per item, set ``done`` once its
        result is written (or could not be: ``unwritten``). ``first_delivery``: the items' Celery
        message was not put back after a worker died (a loop may then overlap its ``running``
        mark with the model's work)."""
        ...

    @property
    def version(self) -> str:
        """The served model's version (``<model>@<digest>``), stamped on its results."""
        ...

    def warm_up(self) -> None:
        """One real pass through the model, so the first request pays no lazy initialisation."""
        ...

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish what runs and waits, then stop the thread (at most ``timeout_s`` seconds)."""
        ...


class Outlet:
    """Where a loop hands what leaves it besides results. Every method is a no-op here (a loop run
    without one drops these); the worker's runtime overrides them. Called on the loop's thread:
    an outlet must not block for long, and must not raise (a loop logs and goes on if it does)."""

    def refused(self, job: Job) -> None:
        """``job`` was refused and failed without running: poison (started too often) or invalid in
        a way only the model can tell (a prompt too long). Its failed result is written by the loop."""

    def chunk(self, chunk: Chunk) -> None:
        """New text of a ``stream_to_kafka`` generation."""
