"""The API's ``done``-channel listener under a flood: messages redis.asyncio has already buffered are
read without suspending, so a publisher faster than the reader (anyone with Redis access) would hold
the event loop, and every request of the API process (``/healthz`` too) would wait behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from producers.api.waits import WaitHub
from schemas.settings import Settings

FLOOD = 20_000  # messages the fake subscription serves before it ends


class FloodedPubSub:
    def __init__(self) -> None:
        self.served = 0

    async def subscribe(self, channel: str) -> None:
        pass

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        while self.served < FLOOD:  # every message already buffered: no await suspends
            self.served += 1
            yield {"type": "message", "data": b"\xff junk " + b"x " * 50}
        raise asyncio.CancelledError  # the flood is over: the listener ends

    async def aclose(self) -> None:
        pass


class FloodedRedis:
    def __init__(self) -> None:
        self.sub = FloodedPubSub()

    def pubsub(self, **kw: Any) -> FloodedPubSub:
        return self.sub

    async def aclose(self) -> None:
        pass


def test_a_flood_on_the_done_channel_does_not_starve_the_event_loop():
    async def scenario() -> tuple[int, bool]:
        hub = WaitHub(Settings())
        redis = FloodedRedis()
        hub._redis = redis  # type: ignore[assignment]
        hub.start()
        await asyncio.sleep(0.01)  # another request's task: it must get the loop back mid-flood
        served_when_resumed = redis.sub.served
        await hub.close()
        return served_when_resumed, hub._task is None

    served, closed = asyncio.run(scenario())
    assert served < FLOOD and closed
