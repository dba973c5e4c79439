"""Kafka intake: a consumer group that validates requests and hands them to Celery.

For each poll: validate every record; record the valid ones as ``queued`` in Redis; send them to
their model's Celery queue, many per message; publish the invalid ones to the dead-letter topic
(and answer them ``failed`` where they carry a request id); only then commit the offsets. A crash
anywhere before the commit replays the records, and the result store makes the replay harmless.
A request whose deadline passed while it waited in Kafka is answered ``expired`` here.

One module per concept: the poll/commit loop and its lifecycle (:mod:`workers.intake.loop`,
:class:`Intake`), admitting a poll (:mod:`workers.intake.admit`), refusing records: strikes, dead
letters, unreadable batches (:mod:`workers.intake.refuse`); backpressure, the consumer, stalls,
truncation, trimming, lost records and retention each have their own module. This one starts the
process.

Run it with ``inferq-intake`` (or ``python -m workers.intake``); SIGTERM finishes the current poll,
commits and exits.
"""

from __future__ import annotations

import logging
import signal
import threading

from schemas.naming import requests_topic
from schemas.settings import get_settings
from workers.intake.cpu import yield_cpu
from workers.intake.loop import Intake
from workers.intake.retention import retention_warning
from workers.telemetry.logs import configure_logging, stop_logging

log = logging.getLogger(__name__)


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "intake")
    if yield_cpu(settings.intake_cpu_policy):
        log.info("intake runs at SCHED_IDLE (INFERQ_INTAKE_CPU_POLICY=idle)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    intake = Intake.from_settings(settings)
    if (retention := retention_warning(settings)) is not None:  # workers.intake.retention
        log.warning(retention)
    log.info("intake consuming %s as group %s", requests_topic(settings), settings.kafka_group_id)
    intake.run(stop)
    log.info("intake stopped")
    stop_logging()


if __name__ == "__main__":
    main()

__all__ = ["Intake", "main"]
