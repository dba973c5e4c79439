"""The sinks of this deployment, by kind: the one place a new kind of delivery is added."""

from __future__ import annotations

from schemas.settings import Settings
from workers.delivery.kafka_sink import KafkaSink
from workers.delivery.sink import Sink
from workers.delivery.webhook import WebhookSink


def build_sinks(settings: Settings) -> dict[str, Sink]:
    """``kind -> Sink`` for the delivery service (``kafka`` for reply topics and
    ``INFERQ_RESULTS_TOPIC``; ``webhook`` for callback URLs). A target whose kind has no sink here
    is recorded undeliverable (``no_<kind>_sink``)."""
    sinks: dict[str, Sink] = {"kafka": KafkaSink(settings), "webhook": WebhookSink(settings)}
    return sinks
