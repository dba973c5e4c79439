"""Contract tests of the kombu internals inferq relies on (workers/transport/kombu.py), one per
internal, against a real redis-server: run them before moving the kombu pin."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import kombu as kombu_package
import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Producer

from schemas.connections import redis_client
from schemas.settings import Settings
from tests.stack import redis_only
from workers.transport import kombu
from workers.transport.app import make_app


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A redis-server of its own (the broker, on a free port)."""
    with redis_only(Settings(), tmp_path_factory.mktemp("kombu-contract")) as settings:
        yield settings


@pytest.fixture
def app(broker: Settings) -> Celery:
    return make_app(broker)


@pytest.fixture
def raw(broker: Settings) -> redis.Redis:
    """The broker's database, read directly."""
    client = redis_client(broker, broker.celery_broker_url)
    client.flushdb()
    return client


def publish(conn: Connection, queue: str, body: str, priority: int = 0) -> None:
    """A message straight to ``queue`` (the default exchange routes by queue name), as Celery
    sends them: kombu's JSON envelope, with a priority."""
    Producer(conn.default_channel, exchange=Exchange("")).publish(
        body, routing_key=queue, serializer="json", priority=priority, declare=[]
    )


def take(channel: Any, queue: str) -> Any:
    message = channel.basic_get(queue, no_ack=False)
    assert message is not None, f"nothing on {queue}"
    return message


def test_the_installed_kombu_is_the_pinned_minor_version() -> None:
    assert kombu.INSTALLED == kombu.PINNED == (5, 7)
    assert kombu_package.__version__.startswith("5.7.")


def test_a_message_taken_is_kept_in_the_unacked_hash_and_its_index_until_acked(
    app: Celery, raw: redis.Redis
) -> None:
    with app.connection_for_write() as conn:
        publish(conn, "q.unacked", "one")
        channel = conn.default_channel
        message = take(channel, "q.unacked")
        tag = message.delivery_tag
        # the layout Unacked reads: hash tag -> JSON [payload, exchange, routing key]; index tag -> epoch s
        assert channel.qos.unacked_key == "unacked" and channel.qos.unacked_index_key == "unacked_index"
        held, delivered = raw.hget("unacked", tag), raw.zscore("unacked_index", tag)
        assert held is not None and delivered is not None
        payload, exchange, routing_key = json.loads(held)
        assert payload["body"] and (exchange, routing_key) == ("", "q.unacked")
        assert abs(delivered - time.time()) < 60
        unacked = kombu.Unacked(channel)
        assert tag in unacked.older_than(0) and tag not in unacked.older_than(3600)
        channel.basic_ack(tag)
        assert raw.hget("unacked", tag) is None and raw.zscore("unacked_index", tag) is None
        assert tag not in unacked.older_than(0)


def test_restore_puts_a_message_back_on_its_queue_marked_redelivered(app: Celery, raw: redis.Redis) -> None:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        publish(conn, "q.restore", "first")
        publish(conn, "q.restore", "second")
        first = take(channel, "q.restore")
        assert first.payload == "first" and not first.delivery_info.get("redelivered")
        kombu.Unacked(channel).restore(first.delivery_tag)
        assert raw.hget("unacked", first.delivery_tag) is None
        assert raw.zscore("unacked_index", first.delivery_tag) is None
        # leftmost: LPUSH, the end new messages join (kombu takes with RPOP), so it goes behind
        # what was already waiting rather than ahead of it
        assert [take(channel, "q.restore").payload for _ in range(2)] == ["second", "first"]
        kombu.Unacked(channel).restore("a-tag-nobody-holds")  # acked meanwhile: a no-op
        assert raw.llen("q.restore") == 0


def test_a_restored_message_reaches_celery_as_redelivered(app: Celery, raw: redis.Redis) -> None:
    """What the task reads as ``delivery_info["redelivered"]`` (its first_delivery)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        publish(conn, "q.again", "again")
        message = take(channel, "q.again")
        kombu.Unacked(channel).restore(message.delivery_tag)
        again = take(channel, "q.again")
        assert again.delivery_info.get("redelivered") is True


def test_priority_steps_live_in_lists_named_queue_sep_step(app: Celery, raw: redis.Redis) -> None:
    assert kombu.PRIORITY_SEP == "\x06\x16"
    with app.connection_for_write() as conn:
        for step in (0, 3, 6):
            publish(conn, "q.pri", f"step {step}", priority=step)
        for step in (0, 3, 6):
            assert raw.llen(kombu.priority_list("q.pri", step)) == 1
        assert kombu.priority_list("q.pri", 0) == "q.pri"
        assert kombu.queue_of(kombu.priority_list("q.pri", 6)) == "q.pri"
        assert conn.default_channel._q_for_pri("q.pri", 3) == kombu.priority_list("q.pri", 3)
        channel = conn.default_channel
        assert [take(channel, "q.pri").payload for _ in range(3)] == ["step 0", "step 3", "step 6"]


def test_ack_and_reject_on_a_replaced_channel_do_not_raise(app: Celery, raw: redis.Redis) -> None:
    """After a reconnect the old channel has no connection; acking on it must not stop the worker."""
    with app.connection_for_write() as conn:
        channel = conn.channel()
        publish(conn, "q.orphan", "a")
        publish(conn, "q.orphan", "b")
        a, b = take(channel, "q.orphan"), take(channel, "q.orphan")
        channel.close()
        assert channel.connection is None
        channel.basic_ack(a.delivery_tag)
        channel.basic_reject(b.delivery_tag, requeue=True)
        # neither acked nor restored: still unacked, for the owner reaper or the visibility timeout
        assert raw.hget("unacked", a.delivery_tag) is not None
        assert raw.hget("unacked", b.delivery_tag) is not None


def test_closing_a_channel_does_not_restore_its_unacked_messages(app: Celery, raw: redis.Redis) -> None:
    assert kombu.kombu_redis.Channel.do_restore is False
    with app.connection_for_write() as conn:
        channel = conn.channel()
        publish(conn, "q.close", "held")
        held = take(channel, "q.close")
        channel.close()
        assert raw.llen("q.close") == 0  # not put back by the close (kombu's default would)
        assert raw.hget("unacked", held.delivery_tag) is not None


def test_the_delivery_tag_of_a_received_celery_request(app: Celery, raw: redis.Redis) -> None:
    """Celery's received request carries the kombu message (``Request.message.delivery_tag``)."""
    from celery.worker.request import Request

    def contract(items: list[Any]) -> None:
        """A task for the request to name."""

    task = app.task(name="inferq.contract", shared=False)(contract)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        app.send_task("inferq.contract", args=[[]], queue="q.request")
        message = take(channel, "q.request")
        request = Request(message, app=app, task=task)
        assert kombu.delivery_tag(request) == message.delivery_tag
        assert kombu.delivery_tag(SimpleNamespace()) is None
