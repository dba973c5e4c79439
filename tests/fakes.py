"""The one in-memory stand-in for the result store (:class:`workers.store.store.ResultStore`), for tests
that run the worker core or the intake's helpers without Redis.

It keeps the rules the code under test relies on, not the Lua: results only move forward (a terminal
result is never replaced and a ``start`` of one is refused with 0), ``start`` counts the attempts of a
``running`` mark (1 = the first), ``progress`` answers each running result's stop flag. The real
store's scripts are tested against a real Redis in tests/integration.

``StoreSurface`` names the methods the fake stands in for, with the real signatures; mypy checks
below that both the real store and the fake have them, so a change of signature in the store
breaks the type check here rather than passing silently in the unit tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from schemas.messages import GenerationOutput, InferenceResult, ResultStatus

if TYPE_CHECKING:
    from workers.store.store import ResultStore


class StoreSurface(Protocol):
    """The part of ``ResultStore`` that the engine, the decoder and the intake's lost-record sweep call."""

    def start(self, results: Iterable[InferenceResult]) -> list[int]: ...

    def advance(self, results: Iterable[InferenceResult], *, only_if_absent: bool = False) -> list[bool]: ...

    def progress(self, results: Sequence[InferenceResult]) -> list[str]: ...

    def unseen(self, older_than_s: float, limit: int = 500) -> list[tuple[str, str]]: ...

    def republished(self, key: str) -> None: ...


class FakeStore:
    """Results by request id, forward-only, with what a test wants to look at afterwards.

    - ``results``: the latest result held per request id; ``writes``: (request id, status) of every
      accepted ``start``/``advance``, in order; ``attempts``: ``running`` marks per request id (a test
      may preset it to stand for earlier deliveries whose worker died);
    - ``progressed``: every result ``progress`` was given; ``stop``: request ids a client asked to
      cancel; ``cancel_after_tokens``: cancel a request once its outputs hold that many tokens;
    - ``found``: the (result key, wire JSON) hand-offs ``unseen`` reports; ``bumped``: the keys
      ``republished`` was told about.
    """

    def __init__(self, unseen: Iterable[tuple[str, str]] = ()) -> None:
        self.results: dict[str, InferenceResult] = {}
        self.writes: list[tuple[str, ResultStatus]] = []
        self.attempts: dict[str, int] = {}
        self.progressed: list[InferenceResult] = []
        self.stop: set[str] = set()
        self.cancel_after_tokens: dict[str, int] = {}
        self.found: list[tuple[str, str]] = list(unseen)
        self.bumped: list[str] = []
        self.lock = threading.Lock()  # the decoder writes from its own thread

    def start(self, results: Iterable[InferenceResult]) -> list[int]:
        """Each result's attempt number once written (1 = first ``running`` mark); 0 where refused."""
        verdicts = []
        with self.lock:
            for r in results:
                held = self.results.get(r.request_id)
                ok = held is None or not held.status.terminal
                if ok:
                    self.writes.append((r.request_id, r.status))
                    self.results[r.request_id] = r
                    if r.status is ResultStatus.RUNNING:
                        self.attempts[r.request_id] = self.attempts.get(r.request_id, 0) + 1
                verdicts.append(self.attempts.get(r.request_id, 1) if ok else 0)
        return verdicts

    def advance(self, results: Iterable[InferenceResult], *, only_if_absent: bool = False) -> list[bool]:
        """Move each result forward; False where a terminal (or, ``only_if_absent``, any) result is held."""
        results = list(results)
        if only_if_absent:
            with self.lock:
                absent = [r.request_id not in self.results for r in results]
            written = iter(self.start([r for r, a in zip(results, absent, strict=True) if a]))
            return [bool(next(written)) if a else False for a in absent]
        return [bool(n) for n in self.start(results)]

    def progress(self, results: Sequence[InferenceResult]) -> list[str]:
        """Replace running results; per result ``"cancel"`` once asked to stop, ``"gone"`` once ended."""
        flags = []
        with self.lock:
            for r in results:
                held = self.results.get(r.request_id)
                if held is not None and held.status.terminal:
                    flags.append("gone")
                    continue
                self.progressed.append(r)
                self.results[r.request_id] = r
                tokens = sum(o.tokens for o in r.outputs or [] if isinstance(o, GenerationOutput))
                if tokens >= self.cancel_after_tokens.get(r.request_id, 10**9):
                    self.stop.add(r.request_id)
                flags.append("cancel" if r.request_id in self.stop else "")
        return flags

    def unseen(self, older_than_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """The hand-offs in ``found``, whatever their age."""
        return list(self.found[:limit])

    def republished(self, key: str) -> None:
        self.bumped.append(key)


if TYPE_CHECKING:  # the surface is the real store's, and the fake has it (checked by mypy only)
    _real: type[StoreSurface] = ResultStore
    _fake: type[StoreSurface] = FakeStore


class FakeFuture:
    """What ``KafkaProducer.send`` returns: ``get`` raises the refusal, if any."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        if self.error:
            raise self.error


class FakeProducer:
    """A Kafka producer that records every send as (topic, key, value, headers) and refuses the
    first sends with ``errors`` (None = accepted), raised at ``send`` or at the future's ``get``."""

    def __init__(self, errors: Iterable[Exception | None] = (), at_send: bool = False) -> None:
        self.errors, self.at_send = list(errors), at_send
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = []

    def send(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> FakeFuture:
        error = self.errors.pop(0) if self.errors else None
        self.sent.append((topic, key, value, headers))
        if error and self.at_send:
            raise error
        return FakeFuture(error)

    @property
    def values(self) -> list[bytes | None]:
        return [value for _, _, value, _ in self.sent]


class FakeCache:
    """The result cache (:class:`workers.store.cache.ResultCache`) as a dict: ``entries`` by key;
    ``reads``/``writes`` count round trips; ``down`` makes every round trip fail (it answers None /
    False, as the real one does when its instance is away)."""

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}
        self.reads = self.writes = 0
        self.down = False

    def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        self.reads += 1
        return None if self.down else [self.entries.get(k) for k in keys]

    def put_many(self, entries: dict[str, bytes]) -> bool:
        self.writes += 1
        if self.down:
            return False
        self.entries.update(entries)
        return True
