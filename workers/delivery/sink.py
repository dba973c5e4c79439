"""The interface every delivery sink implements, and the one error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Delivery:
    """One terminal result to send to one target.

    ``body`` is the result's JSON exactly as stored in Redis (the same bytes every try, so a reader
    that dedups on ``request_id`` sees one content); ``target`` is the reply topic or callback URL;
    ``attempt`` counts from 1.
    """

    request_id: str
    tenant: str | None
    target: str
    body: bytes
    attempt: int = 1
    trace_id: str | None = None


class DeliveryFailed(Exception):
    """A try that did not deliver. ``retryable``: a later try may succeed (timeouts, 5xx, a broker
    away); not retryable: it never will (a refused address, 4xx but 408/429), so it is recorded as
    undeliverable at once. ``reason`` is a short, log-safe word or phrase (``timeout``, ``http_503``,
    ``refused_address``)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class Sink(Protocol):
    """Sends deliveries of one kind (``kafka`` or ``webhook``); raises :class:`DeliveryFailed`.

    A sink whose tries are slow and independent sets a class attribute ``concurrent = True`` (and
    is thread-safe): the dispatcher then runs its tries on a pool and never waits on one."""

    kind: str

    def send(self, delivery: Delivery) -> None: ...

    def close(self) -> None: ...
