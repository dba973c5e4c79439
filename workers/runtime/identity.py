"""A worker process's identity in Redis, and the messages it holds.

Each process is an *instance* (a random token) whose key (``<p>:instance:<token>``) lives while
the process does: it is renewed every heartbeat and expires after three missed ones. Each message
is recorded, as it arrives (prefetched ones included), with the instance that holds it
(``<p>:owners``: delivery tag → token), so the owner reaper of any worker
(:mod:`workers.runtime.recovery`) puts it back at once when its instance dies.
"""

from __future__ import annotations

import secrets
import threading

import redis

from schemas.naming import instance_key, node_key, owners_key
from schemas.settings import Settings
from workers.store.store import as_text

HEARTBEAT_S = 5.0  # how often a worker renews its keys and runs the recovery sweeps
KEY_TTL_S = int(HEARTBEAT_S * 3)  # a worker's keys outlive three missed heartbeats


class Instance:
    """This worker process: its token, its liveness key and the messages it holds."""

    def __init__(self, client: redis.Redis, settings: Settings, token: str | None = None) -> None:
        self.token = token or secrets.token_hex(8)
        self._client = client
        self._s = settings
        self._tags: dict[str, str] = {}  # Celery task id → kombu delivery tag, of the messages held
        self._lock = threading.Lock()

    def claim(self, hostname: str) -> None:
        """Go live before taking messages; a previous run under this node name is dead (its
        messages are put back by the next reap)."""
        self.keep_alive(hostname)
        previous = self._client.getset(node_key(self._s, hostname), self.token)
        if previous and as_text(previous) != self.token:
            self._client.delete(instance_key(self._s, as_text(previous)))

    def keep_alive(self, hostname: str) -> None:
        self._client.set(instance_key(self._s, self.token), hostname, ex=KEY_TTL_S)

    def retire(self) -> None:
        self._client.delete(instance_key(self._s, self.token))

    def own(self, task_id: str, tag: str) -> None:
        """Record that this process holds message ``tag`` (of Celery task ``task_id``)."""
        with self._lock:
            self._tags[task_id] = tag
        self._client.hset(owners_key(self._s), tag, self.token)

    def release(self, task_id: str) -> None:
        """The task of ``task_id`` ended (its message acked, rejected or put back)."""
        with self._lock:
            tag = self._tags.pop(task_id, None)
        if tag:
            self._client.hdel(owners_key(self._s), tag)

    def owners(self) -> dict[str, str]:
        """Every recorded message of every worker: delivery tag → instance token."""
        return {as_text(k): as_text(v) for k, v in self._client.hgetall(owners_key(self._s)).items()}

    def alive(self, tokens: set[str]) -> set[str]:
        """Which of ``tokens`` are instances whose key is still alive (one round trip)."""
        ordered = sorted(tokens)
        if not ordered:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for token in ordered:
            pipe.exists(instance_key(self._s, token))
        return {t for t, up in zip(ordered, pipe.execute(), strict=True) if up}

    def disown(self, tag: str) -> None:
        """Forget the owner of message ``tag`` (it was put back on its queue)."""
        self._client.hdel(owners_key(self._s), tag)
