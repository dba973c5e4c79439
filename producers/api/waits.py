"""Long polls that hold no thread: one ``done``-channel subscription per process, fanned out.

``GET /v1/results/{id}?wait_ms=N`` used to block a worker thread in a pub/sub read for up to N ms;
40 of them took the whole pool and ``/healthz`` queued behind them. Here one task per process
reads the store's ``done`` channel (redis.asyncio) and resolves the asyncio futures of the requests
waiting on each id (keyed by the id as the store publishes it: scoped by tenant), so an open long
poll costs a future, not a thread. Pub/sub is a wake-up, not the record: each wait re-reads its
result every :data:`SWEEP_S` seconds, and after the subscription is re-established, so a missed
message costs at most a sweep.

Open waits are capped per tenant (``INFERQ_API_MAX_WAITS_PER_TENANT``, the key's tenant or the
namespace asked for) and in all (``INFERQ_API_MAX_WAITS``); over either, the call is refused with
429 ``quota_exceeded`` at once, so one tenant's polls cannot crowd out another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import redis.asyncio as aioredis

from schemas.connections import redis_ssl_options
from schemas.errors import QuotaExceeded
from schemas.messages import InferenceResult
from schemas.naming import done_channel, done_ids
from schemas.settings import Settings

log = logging.getLogger(__name__)

SWEEP_S = 2.0  # a waiting request re-reads its result this often (a missed pub/sub message)
RESUBSCRIBE_S = 0.5  # pause before subscribing again after the connection was lost
PING_TIMEOUT_S = 1.0


class WaitHub:
    """The process's subscription and the futures waiting on it; use from the event loop only."""

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._open: dict[str, int] = {}  # tenant (or "") -> open waits
        self._total = 0
        self._task: asyncio.Task[None] | None = None
        self._redis: aioredis.Redis | None = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            url = self._s.redis_url
            self._redis = aioredis.Redis.from_url(
                url,
                socket_timeout=5.0,
                socket_connect_timeout=PING_TIMEOUT_S,
                **redis_ssl_options(self._s, url),
            )
        return self._redis

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="inferq-done-channel")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> bool:
        """Redis answers within :data:`PING_TIMEOUT_S` (for ``/healthz``, never behind long polls)."""
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), PING_TIMEOUT_S))
        except (asyncio.TimeoutError, OSError, aioredis.RedisError):
            return False

    async def _listen(self) -> None:
        channel = done_channel(self._s)
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self._wake_all()  # anything finished while unsubscribed is found by a re-read
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        for done_id in done_ids(message["data"]):  # a batch's ids (or one: older writers)
                            self._wake(done_id)
                    # messages already buffered are read without suspending: a flood on the channel
                    # (anyone with Redis access can publish) must not starve the requests' tasks
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a lost connection: subscribe again; waits sweep meanwhile
                log.warning("done channel subscription lost (%s); subscribing again", e)
                await asyncio.sleep(RESUBSCRIBE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _wake(self, done_id: str) -> None:
        for future in self._waiting.pop(done_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for done_id in list(self._waiting):
            self._wake(done_id)

    @contextlib.contextmanager
    def slot(self, tenant: str | None) -> Iterator[None]:
        """One open wait of ``tenant``; :class:`QuotaExceeded` over either cap."""
        who = tenant or ""
        if self._open.get(who, 0) >= self._s.api_max_waits_per_tenant:
            raise QuotaExceeded(
                f"this tenant already holds {self._s.api_max_waits_per_tenant} open long polls",
                hint="wait for one to return, or poll without wait_ms",
            )
        if self._total >= self._s.api_max_waits:
            raise QuotaExceeded(
                f"this API process already holds {self._s.api_max_waits} open long polls",
                hint="retry in a second, or poll without wait_ms",
            )
        self._open[who] = self._open.get(who, 0) + 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            left = self._open[who] - 1
            if left:
                self._open[who] = left
            else:
                del self._open[who]

    @contextlib.asynccontextmanager
    async def _registered(self, done_id: str) -> AsyncIterator[Callable[[], asyncio.Future[None]]]:
        futures: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()

        def arm() -> asyncio.Future[None]:
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(done_id, set()).add(future)
            futures.append(future)
            return future

        try:
            yield arm
        finally:
            waiting = self._waiting.get(done_id)
            if waiting is not None:
                waiting.difference_update(futures)
                if not waiting:
                    del self._waiting[done_id]

    async def wait(
        self,
        done_id: str,
        timeout_s: float,
        read: Callable[[], Awaitable[InferenceResult | None]],
        gone: Callable[[], Awaitable[object]] | None = None,
    ) -> InferenceResult | None:
        """``read()`` until it is terminal (or None), woken by ``done_id`` on the channel, for at most
        ``timeout_s``; the last read is the answer. ``gone()`` returns when the caller disconnects:
        the wait then ends at once (None), so an abandoned poll does not hold its tenant's slot."""
        if gone is None:
            return await self._wait(done_id, timeout_s, read)
        waiter = asyncio.ensure_future(self._wait(done_id, timeout_s, read))
        watcher = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, watcher):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        return waiter.result() if waiter.done() and not waiter.cancelled() else None

    async def _wait(
        self, done_id: str, timeout_s: float, read: Callable[[], Awaitable[InferenceResult | None]]
    ) -> InferenceResult | None:
        self.start()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        async with self._registered(done_id) as arm:
            future = arm()  # armed before the first read: a completion in between is not missed
            while True:
                result = await read()
                left = give_up - loop.time()
                if result is None or result.status.terminal or left <= 0:
                    return result
                with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError itself from 3.11
                    await asyncio.wait_for(asyncio.shield(future), min(left, SWEEP_S))
                if future.done():
                    future = arm()

    def stats(self) -> dict[str, Any]:
        return {"open": self._total, "tenants": len(self._open), "ids": len(self._waiting)}
