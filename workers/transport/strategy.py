"""The worker's strategy for ``inferq.infer`` messages: Celery's own, behind a guard.

Anyone who can write to the broker can put a message on a model's queue. Celery's default strategy
reads a message's body and headers in the consumer's own loop, where an exception is an
"unrecoverable error" that stops the worker: an empty body or a JSON scalar (kombu hands an empty
body back undecoded, and ``'args' in 5`` is a TypeError), or a header that does not parse (a
garbage ``eta``). A stopped worker's message is then put back by the visibility timeout and stops
the next worker too. Here such a message is an invalid task instead: Celery logs it and rejects it
(dropped, never redelivered), and the worker serves on.

Internals (Celery 5.x): ``Task.Strategy`` (the strategy factory, ``celery.worker.strategy.default``),
the handler's signature ``(message, body, ack, reject, callbacks, **kw)`` with ``body`` None for task
protocol 2, and ``InvalidTaskError`` / ``ContentDisallowed`` / ``DecodeError`` being what the consumer
catches around a handler (``Consumer.create_task_handler``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default
from kombu.exceptions import ContentDisallowed, DecodeError

Handler = Callable[..., Any]
STRATEGY = f"{__name__}:guarded"  # ``Task.Strategy`` of the worker's task (Celery resolves the name)

# what the consumer itself handles around a handler (the message is rejected or acked)
_HANDLED = (InvalidTaskError, ContentDisallowed, DecodeError)


def protocol_error(payload: Any) -> str | None:
    """Why a decoded protocol-2 body cannot be a task's, or None when it has the shape: an object
    (Celery's hybrid form) or ``[args (list), kwargs (object), embed (object or null)]``."""
    if isinstance(payload, dict):
        return None
    if isinstance(payload, list | tuple) and len(payload) == 3:
        args, kwargs, embed = payload
        if isinstance(args, list | tuple) and isinstance(kwargs, dict) and isinstance(embed, dict | None):
            return None
    return f"the body is not [args, kwargs, embed] (a {type(payload).__name__})"


# protocol-2 headers that name things: Celery copies them into its ``task-received`` event, and a
# non-string there (a list as ``root_id``) breaks every monitor that indexes tasks by them (Flower's
# task list answers 500 from then on)
_NAME_HEADERS = ("id", "task", "root_id", "parent_id", "group", "shadow", "origin", "argsrepr", "kwargsrepr")


def header_error(headers: Any) -> str | None:
    """Why a protocol-2 message's headers cannot be a task's, or None: each naming header a string
    (or absent / null where Celery allows it), ``retries`` an integer."""
    if not isinstance(headers, dict):
        return "the headers are not an object"
    for name in _NAME_HEADERS:
        value = headers.get(name)
        if value is not None and not isinstance(value, str):
            return f"header {name!r} is a {type(value).__name__}, not a string"
    if not isinstance(headers.get("id"), str) or not isinstance(headers.get("task"), str):
        return "headers 'id' and 'task' must be strings"
    retries = headers.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        return "header 'retries' is not an integer"
    return None


def guarded(task: Any, app: Any, consumer: Any, **kw: Any) -> Handler:
    """Celery's default strategy for ``task``, whose messages never stop the consumer."""
    handle = default(task, app, consumer, **kw)
    connection_errors = tuple(consumer.connection_errors or ())

    def task_message_handler(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        if body is None:  # protocol 2: decoded here (cached on the message: the handler reads it too)
            why = header_error(message.headers) or protocol_error(message.payload)
            if why is not None:
                raise InvalidTaskError(why)
        try:
            return handle(message, body, *args, **kwargs)
        except (*_HANDLED, *connection_errors):
            raise
        except Exception as e:  # a header that does not parse, or anything else of the message's
            raise InvalidTaskError(f"the message cannot be read as a task: {e!r}"[:300]) from e

    return task_message_handler
