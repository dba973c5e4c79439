"""Messages on a model's Celery queue that no intake wrote (anyone who can write to the broker):
a foreign content type, a body that is not the one its content type says, a body of the wrong
shape. Each is dropped or answered by the worker, none is redelivered for ever, and the worker goes
on serving the requests after them (the real stack: broker, Redis, Celery worker)."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import httpx
import redis
from kombu import Exchange, Producer

from producers.client import InferqClient
from schemas.messages import ResultStatus
from schemas.naming import model_queue
from schemas.settings import Settings
from tests.stack import diagnose, eventually
from workers.transport.app import TASK_INFER, make_app
from workers.transport.serializer import CONTENT_TYPE

MODEL = "all-MiniLM-L6-v2"


def headers() -> dict[str, Any]:
    """Celery's task protocol 2 headers of an ``inferq.infer`` message."""
    tid = str(uuid.uuid4())
    return {
        "lang": "py",
        "task": TASK_INFER,
        "id": tid,
        "root_id": tid,
        "parent_id": None,
        "group": None,
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "attacker",
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "shadow": None,
    }


HOSTILE: list[tuple[str, bytes]] = [
    ("application/x-python-serialize", pickle.dumps(([[{"request": {}}]], {}, {}))),
    (CONTENT_TYPE, b"{not json"),
    (CONTENT_TYPE, b"\xff\xfe\x00"),
    (CONTENT_TYPE, b"[" * 5_000 + b"]" * 5_000),
    (CONTENT_TYPE, b"[1e400]"),
    (CONTENT_TYPE, b""),
    (CONTENT_TYPE, b"[]"),
    (CONTENT_TYPE, b'"a string"'),
    (CONTENT_TYPE, b"[[], {}, {}]"),
    (CONTENT_TYPE, b'[[[{"request": 5}], "extra"], {}, {}]'),
    (CONTENT_TYPE, b'[[[1, 2, 3]], {"unknown": 1}, {}]'),
    ("application/json", b'[[{"request": {"model": "' + b"x" * 100_000 + b'"}}], {}, {}]'),
    ("text/plain", b"hello"),
    (CONTENT_TYPE, b"5"),
    (CONTENT_TYPE, b"null"),
    (CONTENT_TYPE, b"true"),
    ("application/json", b""),
    ("application/json", b"1.5"),
    (CONTENT_TYPE, b'[[[{"request": {}}]], {}, 7]'),
]
# headers Celery parses in the consumer's loop: the body is a well-formed message's
BODY = b'[[[{"request": {}}]], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]'
HOSTILE_HEADERS: list[dict[str, Any]] = [
    {"eta": "not a date"},
    {"expires": "not a date"},
    {"eta": 5},
    {"expires": [1]},
    {"timelimit": 5},
    {"timelimit": ["a", "b"]},
    {"id": None},
    {"id": 5},
    {"retries": "many"},
    {"argsrepr": {"a": 1}},
    {"root_id": ["x"]},
    {"shadow": 5},
    {"origin": {"x": 1}},
    {"task": 5},
    {"task": None},
    {"lang": "js"},
]


def test_hostile_celery_messages_are_dropped_and_the_worker_serves_on(stack, settings: Settings) -> None:
    """Before: an empty body, a JSON scalar or a ``timelimit`` that is not a pair stopped the worker
    ("Unrecoverable error"), and the message, put back by the visibility timeout, stopped the next."""
    queue = model_queue(settings, MODEL)
    cases = [(ct, body, headers()) for ct, body in HOSTILE]
    cases += [(CONTENT_TYPE, BODY, {**headers(), **over}) for over in HOSTILE_HEADERS]
    with InferqClient(settings) as client:
        warm = client.submit("embed", MODEL, "the worker serves before the hostile messages")
        assert client.wait(warm, timeout_s=120).status is ResultStatus.DONE
        with make_app(settings).connection_for_write() as conn:
            producer = Producer(conn.default_channel, exchange=Exchange(""))
            for content_type, body, head in cases:
                producer.publish(
                    body,
                    routing_key=queue,
                    content_type=content_type,
                    content_encoding="utf-8" if "json" in content_type else "binary",
                    headers=head,
                    declare=[],
                    priority=5,
                )
        rid = client.submit("embed", MODEL, "served after the hostile messages")
        assert client.wait(rid, timeout_s=60).status is ResultStatus.DONE, diagnose(stack)
    broker = redis.Redis.from_url(settings.celery_broker_url)

    def nothing_left() -> bool:  # none queued, none held unacknowledged (redelivered later)
        lists = [k for k in broker.keys(queue.encode() + b"*") if broker.type(k) == b"list"]
        return sum(broker.llen(k) for k in lists) == 0 and not broker.hlen("unacked")

    eventually(nothing_left, 30, "every hostile message dropped")
    assert all(s["running"] for s in stack.status().values()), diagnose(stack)
    # what the worker announces of a task (its task-received event) keeps monitors working: a
    # non-string naming header (root_id as a list) made Flower's task list answer 500 from then on
    auth = (settings.flower_user, settings.flower_password.get_secret_value())
    answer = httpx.get(f"http://127.0.0.1:{settings.flower_port}/api/tasks", auth=auth, timeout=10)
    assert answer.status_code == 200 and isinstance(answer.json(), dict), answer.text
