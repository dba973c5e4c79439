"""``python -m workers.celery_adapter.health``: exit 0 once a worker on this host has warmed its models.

The readiness probe of worker pods: a worker advertises itself in Redis (``<p>:worker:<node>``)
only after every declared model has run one forward pass, so a pod is ready when its node's key
exists. Exit 1 (not ready) otherwise, including when Redis cannot be reached.
"""

from __future__ import annotations

import socket
import sys

import redis

from schemas.connections import redis_client
from schemas.naming import worker_key
from schemas.settings import get_settings


def ready(hostname: str | None = None) -> bool:
    s = get_settings()
    host = hostname or socket.gethostname()
    try:
        client = redis_client(s, ride_out=False, socket_timeout=2)
        return any(True for _ in client.scan_iter(match=worker_key(s, f"*@{host}"), count=100))
    except redis.RedisError:
        return False


def main() -> None:
    sys.exit(0 if ready() else 1)


if __name__ == "__main__":
    main()
