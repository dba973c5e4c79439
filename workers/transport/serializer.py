"""The Celery messages' serializer: the same JSON as kombu's ``json``, written and read by orjson.

kombu's ``json`` encodes through a Python ``default`` hook and decodes every object through a
Python ``object_hook`` (for its own tagged types, which inferq's messages never hold: work items are
plain JSON, :meth:`schemas.work.WorkItem.wire`), a cost paid per request on the intake and on the
worker. orjson writes and reads the same documents in C. Registered under its own content type, so
a worker accepts both (an older intake's ``json`` messages keep being served during an upgrade).
"""

from __future__ import annotations

from typing import Any

import orjson
from kombu.serialization import register

NAME = "inferq-orjson"
CONTENT_TYPE = "application/x-inferq-orjson"


def _dumps(body: Any) -> str:
    return orjson.dumps(body).decode()


def register_orjson() -> None:
    """Make :data:`NAME` known to kombu in this process (idempotent)."""
    register(NAME, _dumps, orjson.loads, content_type=CONTENT_TYPE, content_encoding="utf-8")
