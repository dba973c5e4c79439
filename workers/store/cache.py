"""The result cache's Redis: a second instance, bounded and evicting, apart from the result store.

Stored results must never be evicted or slowed by cached outputs, so the cache lives in its own
redis-server (``INFERQ_CACHE_REDIS_URL``) with a ``maxmemory`` and an evicting policy, and every
entry has a TTL (``INFERQ_CACHE_TTL_S``). :meth:`ResultCache.from_settings` refuses, with a
:class:`~schemas.errors.ConfigurationError`, a URL naming the result store's instance, and an
instance that would not evict (``noeviction``, or no ``maxmemory``).

The cache is an optimisation: it never fails a request. A lookup or write that fails (instance
down, slow, full) is logged and counted, the batch is computed as if nothing was cached, and the
cache is left alone for :data:`RETRY_AFTER_S` so a dead instance costs one failed round trip
now and then, not one per batch. Its client does not ride out outages (no retries) and times out
in :data:`TIMEOUT_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import redis

from schemas.connections import redact_url, redis_client
from schemas.errors import ConfigurationError
from schemas.settings import Settings

log = logging.getLogger(__name__)

TIMEOUT_S = 0.25  # a cache round trip (or connect) longer than this counts as a failure
RETRY_AFTER_S = 5.0  # after a failure the cache is skipped this long
EVICTING_POLICIES = frozenset(
    {
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        # every entry has a TTL, so the volatile policies evict them as well
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    }
)


def endpoint(url: str) -> tuple[str, int]:
    """(host, port) of a Redis URL, with the defaults Redis clients use."""
    parts = urlsplit(url)
    host = (parts.hostname or "localhost").lower()
    return ("127.0.0.1" if host in ("localhost", "::1") else host), parts.port or 6379


def check_separate(settings: Settings) -> None:
    """Refuse a cache URL naming the result store's host and port (any database: databases of one
    instance share its memory, so its eviction would reach the results)."""
    if endpoint(settings.cache_redis_url) == endpoint(settings.redis_url):
        raise ConfigurationError(
            f"INFERQ_CACHE_REDIS_URL ({redact_url(settings.cache_redis_url)}) is the result store's "
            "Redis instance: an evicting cache there could evict stored results",
            hint="run a second redis-server for the cache (--maxmemory <bytes> --maxmemory-policy "
            "allkeys-lru --save ''), or leave INFERQ_CACHE_REDIS_URL empty to turn the cache off",
        )


def check_instance(info: Mapping[str, object], results_run_id: str | None = None) -> None:
    """Refuse a cache instance (its ``INFO`` fields) that would not evict, or that is the result
    store's own instance under another name (the same ``run_id``)."""
    hint = (
        "start the cache's redis-server with --maxmemory <bytes> --maxmemory-policy allkeys-lru "
        "(or CONFIG SET them), or leave INFERQ_CACHE_REDIS_URL empty to turn the cache off"
    )
    if results_run_id and info.get("run_id") == results_run_id:
        raise ConfigurationError(
            "INFERQ_CACHE_REDIS_URL reaches the result store's Redis instance (same run_id) under "
            "another address: an evicting cache there could evict stored results",
            hint=hint,
        )
    policy = str(info.get("maxmemory_policy", ""))
    if policy not in EVICTING_POLICIES:
        raise ConfigurationError(
            f"the result cache's Redis has maxmemory-policy {policy or 'unknown'!r}: a full cache would "
            "refuse writes instead of evicting old entries",
            hint=hint,
        )
    if not int(str(info.get("maxmemory", 0)) or 0):
        raise ConfigurationError(
            "the result cache's Redis has no maxmemory: it would grow without a bound", hint=hint
        )


class ResultCache:
    """Reads and writes cached outputs (bytes) by key, one round trip per batch, never raising."""

    def __init__(
        self, client: redis.Redis, ttl_s: int, results_run_id: str | None = None, verified: bool = True
    ) -> None:
        """``verified`` False: the instance was not reachable at start; it is checked
        (:func:`check_instance`) at first contact, and the cache turned off if it fails."""
        self.client = client
        self.ttl_s = ttl_s
        self._results_run_id = results_run_id
        self._verified = verified
        self._off = False  # the instance failed its check: never used
        self._lock = threading.Lock()
        self._skip_until = 0.0  # monotonic seconds: after a failure, leave the cache alone till then

    @classmethod
    def from_settings(cls, settings: Settings, results: redis.Redis | None = None) -> ResultCache | None:
        """The cache ``settings`` configure (None when off). Raises
        :class:`~schemas.errors.ConfigurationError` for an instance that could evict results or
        would not evict itself; an instance not reachable now is only logged (it is checked at
        start only: requests are computed while it is away)."""
        if not settings.cache_redis_url:
            return None
        check_separate(settings)
        url = settings.cache_redis_url
        timeout = {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
        client = redis_client(settings, url, ride_out=False, **timeout)
        run_id = None
        if results is not None:
            try:
                run_id = str(results.info("server").get("run_id", "")) or None
            except redis.RedisError:
                run_id = None
        probe = redis_client(settings, url, ride_out=False, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            info = probe.info()
        except redis.RedisError as e:
            log.warning(
                "result cache %s not reachable at start (%r); computing without it till it is",
                redact_url(url),
                e,
            )
            return cls(client, settings.cache_ttl_s, run_id, verified=False)
        finally:
            probe.close()
        check_instance(info, run_id)
        return cls(client, settings.cache_ttl_s, run_id)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """The value under each key (None: absent), in one MGET; None when the cache did not answer."""
        if not keys or not self._usable():
            return None
        try:
            values = self.client.mget(keys)
        except redis.RedisError as e:
            self._failed("read", e)
            return None
        return [v.encode() if isinstance(v, str) else v for v in values]

    def put_many(self, entries: Mapping[str, bytes]) -> bool:
        """Store ``entries``, each with the TTL, in one pipelined round trip; False when it failed."""
        if not entries or not self._usable():
            return not entries
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value, ex=self.ttl_s)
                pipe.execute()
            return True
        except redis.RedisError as e:
            self._failed("write", e)
            return False

    def _usable(self) -> bool:
        if self._off or time.monotonic() < self._skip_until:
            return False
        if not self._verified:
            try:
                check_instance(self.client.info(), self._results_run_id)
            except ConfigurationError as e:
                log.error("result cache turned off: %s (%s)", e, e.hint)
                self._off = True
                return False
            except redis.RedisError as e:
                self._failed("check", e)
                return False
            self._verified = True
        return True

    def _failed(self, what: str, error: Exception) -> None:
        with self._lock:
            self._skip_until = time.monotonic() + RETRY_AFTER_S
        log.warning(
            "result cache %s failed (%r); computing without it for %.0f s", what, error, RETRY_AFTER_S
        )
