"""The intake's doorbell: producers ring it once the broker has their record; an idle intake waits on it.

Apache Kafka holds an empty fetch until data arrives (``fetch.max.wait.ms``), so a consumer can
block in ``poll`` at no cost. Brokers that answer an empty fetch at once (the local stack's) leave
the intake two bad choices: poll often, and the polls disturb the model (measured: a batch-1
forward pass 28 → 39 ms beside an intake polling every 1–5 ms, each kafka-python poll costing
~2 ms of CPU), or poll rarely and pick records up late. The doorbell removes the choice for
producers that use :class:`producers.client.InferqClient`: after the broker acknowledges a record
the client pushes onto a one-element Redis list, and the intake, between empty polls, waits on
``BLPOP`` instead of sleeping, so it can pause long (``kafka_quiet_poll_ms``) and still wake at
once. A record from any other producer waits at most that pause.

There is one doorbell per partition of the requests topic, and an intake waits on those of the
partitions it owns, so with several intakes a ring wakes the one that will read the record. A ring
is never lost: the list keeps it until the intake pops it (several rings in a row are one element,
so at worst the intake makes one extra empty poll). A woken intake polls up to three times before it
waits again: the first poll may only harvest the fetch kafka-python sent before the record arrived,
which the local broker answers at once, empty. The doorbell is only a wake-up; the
record itself is always read from Kafka. Both sides use a Redis client that does not ride out
outages, so a Redis blip costs a ring (the pause then runs out) instead of blocking either side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import redis

from schemas.connections import redis_client
from schemas.naming import doorbell_key
from schemas.settings import Settings

log = logging.getLogger(__name__)

SOCKET_TIMEOUT_S = 5.0  # a hung Redis costs at most this per ring; waits are cut to half of it


class Doorbell:
    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._client = redis_client(settings, ride_out=False, socket_timeout=SOCKET_TIMEOUT_S)

    def ring(self, metadata: object) -> None:
        """Say a record is in the broker: a kafka-python send callback, given the record's
        metadata (its partition picks the doorbell). Never raises."""
        partition = getattr(metadata, "partition", None)
        if not isinstance(partition, int):
            return
        key = doorbell_key(self._s, partition)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)
            pipe.execute()
        except redis.RedisError as e:  # the intake's pause runs out instead
            log.debug("doorbell not rung: %r", e)

    def wait(self, partitions: Iterable[int], timeout_s: float, stop: threading.Event) -> bool:
        """Wait up to ``timeout_s`` for a ring on any of ``partitions``; True if rung. Without
        Redis (or without partitions, while joining the group), sleeps the timeout."""
        keys = [doorbell_key(self._s, p) for p in sorted(set(partitions))]
        if not keys:
            stop.wait(timeout_s)
            return False
        try:
            wait_s = min(max(timeout_s, 0.001), SOCKET_TIMEOUT_S / 2)
            return self._client.blpop(keys, timeout=wait_s) is not None
        except redis.RedisError as e:
            log.debug("doorbell unreachable (%r); pausing instead", e)
            stop.wait(timeout_s)
            return False

    def close(self) -> None:
        self._client.close()
