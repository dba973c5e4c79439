"""Every kombu internal inferq relies on, behind a small named API (kombu's Redis transport, 5.7.x).

Recovery needs what kombu does not expose: which messages a worker holds unacked, putting one back
on its queue (behind what already waits: kombu pushes left and pops right), and surviving a broker
reconnect. Each function below names the kombu
internals it touches; tests/integration/test_kombu_contract.py checks each against a real Redis,
and importing this module refuses any kombu but the pinned minor version (``kombu>=5.7,<5.8``),
so an upgrade is a deliberate step: run the contract tests, then move :data:`PINNED`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu
from celery import Celery
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

PINNED = (5, 7)  # the kombu minor version these internals were read from and tested against
INSTALLED = tuple(int(part) for part in kombu.__version__.split(".")[:2])
if INSTALLED != PINNED:
    raise ImportError(
        f"kombu {kombu.__version__} is installed; inferq relies on internals of kombu "
        f"{PINNED[0]}.{PINNED[1]}.x's Redis transport (workers/transport/kombu.py). Install "
        f"'kombu>={PINNED[0]}.{PINNED[1]},<{PINNED[0]}.{PINNED[1] + 1}', or run "
        "tests/integration/test_kombu_contract.py against the new version and move PINNED"
    )

# kombu internal: ``Channel.sep``, the separator of the Redis lists that hold a queue's messages
# of each priority step (``<queue><sep><step>``; step 0 is the queue itself)
PRIORITY_SEP: str = kombu_redis.Channel.sep


def priority_list(queue: str, step: int) -> str:
    """The Redis list holding ``queue``'s messages of priority ``step`` (one of the transport's
    ``priority_steps``). Internal: ``Channel._q_for_pri`` and ``Channel.sep``."""
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def queue_of(redis_list: str) -> str:
    """The queue a Redis list of :func:`priority_list` belongs to."""
    return redis_list.split(PRIORITY_SEP)[0]


def delivery_tag(request: Any) -> str | None:
    """The kombu delivery tag of a message Celery received (``task_received``'s request). Celery
    hides it from tasks; the received request still carries the kombu message
    (``celery.worker.request.Request.message.delivery_tag``)."""
    tag = getattr(getattr(request, "message", None), "delivery_tag", None)
    return str(tag) if tag else None


class Unacked:
    """kombu's record of the messages delivered and not yet acked, on one broker channel.

    Internals: ``QoS.unacked_key`` (a hash, delivery tag → JSON ``[payload, exchange, routing
    key]``), ``QoS.unacked_index_key`` (a sorted set, delivery tag → delivery time in epoch
    seconds), ``Channel.client`` (the channel's Redis client) and ``QoS.restore_by_tag``.
    """

    def __init__(self, channel: Any) -> None:
        self._client = channel.client
        self._qos = channel.qos

    def older_than(self, age_s: float) -> list[str]:
        """Delivery tags of the messages delivered more than ``age_s`` seconds ago and not acked."""
        found = self._client.zrangebyscore(self._qos.unacked_index_key, "-inf", time.time() - age_s)
        return [t.decode() if isinstance(t, bytes) else str(t) for t in found]

    def restore(self, tag: str) -> None:
        """Put message ``tag`` back on its queue, marked redelivered, and forget it as unacked.

        ``leftmost``: pushed where new messages join (kombu publishes with LPUSH and takes with
        RPOP), so it goes behind what already waits, as Celery's own requeue does. A WATCH
        transaction on the unacked hash: when two processes restore the same tag at once, it is
        put back once; an unknown tag (acked meanwhile) is a no-op."""
        self._qos.restore_by_tag(tag, leftmost=True)


@contextmanager
def unacked(app: Celery) -> Iterator[Unacked]:
    """The unacked messages of ``app``'s broker, on a connection held for the block."""
    with app.connection_for_write() as conn:
        yield Unacked(conn.default_channel)


_ORPHANED = "broker connection was replaced; message %s will be redelivered (harmless)"


def harden_channel() -> None:
    """Make kombu's Redis channel survive a broker reconnect (idempotent; call before consuming).

    kombu 5.7's Redis channel is not safe across a reconnect (seen in the Redis-restart drill):
    closing the old channel "restores" its unacked messages, and acking a message that arrived on
    it once its task ends, both go through a pool rebuilt from a connection that is already gone,
    and the AttributeError is an "unrecoverable error" that stops the worker. Neither is needed:
    unacked messages stay in kombu's unacked hash, a dead worker's are put back by the owner reaper
    (:mod:`workers.runtime.recovery`), anything else by the visibility timeout, where running again
    is harmless because results only move forward. So the old channel neither restores nor acks.

    Internals: ``Channel.do_restore`` (read by ``QoS.restore_unacked_once`` at close),
    ``Channel.basic_ack(delivery_tag, multiple)`` and ``Channel.basic_reject(delivery_tag,
    requeue)``, and ``Channel.connection`` being ``None`` once the channel is closed.
    """
    channel = kombu_redis.Channel
    if getattr(channel, "_inferq_hardened", False):
        return
    channel._inferq_hardened = True  # type: ignore[attr-defined]
    channel.do_restore = False
    basic_ack, basic_reject = channel.basic_ack, channel.basic_reject

    def ack_unless_orphaned(self: Any, delivery_tag: Any, multiple: bool = False) -> None:
        if self.connection is None:
            log.warning(_ORPHANED, delivery_tag)
            return
        basic_ack(self, delivery_tag, multiple)

    def reject_unless_orphaned(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        if self.connection is None:
            log.warning(_ORPHANED, delivery_tag)
            return
        basic_reject(self, delivery_tag, requeue)

    channel.basic_ack = ack_unless_orphaned  # type: ignore[method-assign]
    channel.basic_reject = reject_unless_orphaned  # type: ignore[method-assign]
