"""The delivery service: terminal results sent beyond Redis (reply topics, webhooks).

Run it with ``inferq-delivery`` (or ``python -m workers.delivery``); several may run (they share
the outbox's consumer group, each entry going to one of them; one that dies has its entries taken
over). SIGTERM finishes the round in progress and exits; entries it still held are taken over
by another process after ``INFERQ_DELIVERY_CLAIM_IDLE_S`` (or by itself when it starts again
under the same name). The Redis result never waits for any of this: the outbox entry is written
with it, and delivery follows.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import Counter as TallyCounter

import redis

from schemas.connections import redis_client
from schemas.errors import ConfigurationError
from schemas.naming import delivery_key
from schemas.replies import reserved_topic
from schemas.settings import Settings, get_settings
from workers.delivery.dispatcher import Dispatcher
from workers.delivery.sink import Delivery
from workers.delivery.sinks import build_sinks
from workers.store.base import TRANSIENT_ERRORS
from workers.store.outbox import Outbox
from workers.telemetry.logs import configure_logging, stop_logging
from workers.telemetry.metrics import record_delivery

log = logging.getLogger(__name__)

DATASET = "inferq.delivery"
REDIS_PAUSE_S = 1.0  # after a Redis error, before the next round
HEARTBEAT_EVERY_S = 2.0  # how often the process says it is alive (its delivery key)
HEARTBEAT_TTL_S = 15  # the key lapses this long after the last beat: the process is gone


class Report:
    """Every outcome counted (``inferq_deliveries``, one metric write per sink and outcome per
    round: each write in multiprocess mode takes a lock and touches a file); undeliverable ones
    (and, at DEBUG, every one) written as an ECS record under ``event.dataset: inferq.delivery``."""

    def __init__(self) -> None:
        self._counts: TallyCounter[tuple[str, str]] = TallyCounter()

    def flush(self) -> None:
        counts, self._counts = self._counts, TallyCounter()
        for (sink, outcome), n in counts.items():
            record_delivery(sink, outcome, n)

    def outcome(self, delivery: Delivery, sink: str, outcome: str, reason: str = "") -> None:
        self._counts[(sink, outcome)] += 1
        level = logging.WARNING if outcome == "failed" else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            "delivery of %s to %s %s%s",
            delivery.request_id,
            sink,
            outcome,
            f" ({reason})" if reason else "",
            extra={
                "event.dataset": DATASET,
                "event.outcome": "success" if outcome == "sent" else "failure",
                "inferq.delivery.sink": sink,
                "inferq.delivery.outcome": outcome,
                "inferq.delivery.reason": reason,
                "inferq.delivery.attempt": delivery.attempt,
                "inferq.request_id": delivery.request_id,
                "inferq.tenant": delivery.tenant or "",
            },
        )


def consumer_name(settings: Settings) -> str:
    """This process's name in the consumer group: ``INFERQ_DELIVERY_CONSUMER_NAME`` (stable per
    replica, so a restarted process picks up its own pending entries), else host and pid."""
    return settings.delivery_consumer_name or f"{socket.gethostname()}-{os.getpid()}"


def run(settings: Settings, stop: threading.Event, client: redis.Redis | None = None) -> None:
    """Deliver until ``stop`` is set."""
    if settings.results_topic and reserved_topic(settings.results_topic, settings):
        raise ConfigurationError(
            f"INFERQ_RESULTS_TOPIC {settings.results_topic!r} is one of the pipeline's own topics",
            hint="name a topic of its own for results (e.g. <prefix>.results)",
        )
    name = consumer_name(settings)
    redis_ = client or redis_client(settings)
    outbox = Outbox(redis_, settings, name)
    dispatcher = Dispatcher(outbox, build_sinks(settings), settings, Report())
    ready, beat = False, 0.0
    try:
        while not stop.is_set():
            try:
                if not ready:
                    outbox.ensure_group()
                    ready = True
                if time.monotonic() - beat >= HEARTBEAT_EVERY_S:
                    redis_.set(delivery_key(settings, name), repr(time.time()), ex=HEARTBEAT_TTL_S)
                    beat = time.monotonic()
                dispatcher.step(block_ms=500)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                ready = False  # the stream was deleted (a flushed Redis): make the group again
            except TRANSIENT_ERRORS as e:
                log.warning("Redis unreachable (%r); delivery pauses", e)
                stop.wait(REDIS_PAUSE_S)
    finally:
        dispatcher.close()


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "delivery")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("delivery service started (consumer %s)", consumer_name(settings))
    run(settings, stop)
    log.info("delivery service stopped")
    stop_logging()


__all__ = ["Report", "main", "run"]
