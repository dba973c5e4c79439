"""A ``done``-channel reader under a flood: anyone with Redis access can publish on the channel, so
one :meth:`DoneWatcher.finished` call must return after a bounded drain (its caller then checks its
own deadline), never loop for as long as messages keep coming, nor lose one it read."""

from __future__ import annotations

import itertools
from typing import Any

from schemas.naming import DONE_MAX_IDS, DONE_SEP
from workers.store.reads import DRAIN_MAX_IDS, DRAIN_MAX_MESSAGES, DoneWatcher


class EndlessPubSub:
    """A subscription that always has another message (a publisher faster than the reader)."""

    def __init__(self, data: Any) -> None:
        self.data, self.served = data, 0

    def subscribe(self, channel: str) -> None:
        pass

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        self.served += 1
        data = self.data(self.served) if callable(self.data) else self.data
        return {"type": "message", "data": data}

    def close(self) -> None:
        pass


class Store:
    channel = "t:done"

    def __init__(self, pubsub: EndlessPubSub) -> None:
        self.client = self
        self._pubsub = pubsub

    def pubsub(self, **kw: Any) -> EndlessPubSub:
        return self._pubsub


def test_a_flood_of_messages_returns_after_a_bounded_drain_and_loses_none():
    pubsub = EndlessPubSub(lambda n: f"id{n}".encode())
    watcher = DoneWatcher(Store(pubsub))
    first = watcher.finished(0.1)
    second = watcher.finished(0.1)
    assert len(first) == len(second) == DRAIN_MAX_MESSAGES
    # every message read was handed out: the subscription's confirmation, then one id per message
    assert first + second == [f"id{n}" for n in range(2, pubsub.served + 1)]


def test_a_flood_of_huge_messages_returns_a_bounded_number_of_ids():
    batch = DONE_SEP.join(f"x{i}" for i in range(DONE_MAX_IDS)).encode()
    watcher = DoneWatcher(Store(EndlessPubSub(batch)))
    ids = watcher.finished(0.1)
    assert DRAIN_MAX_IDS <= len(ids) <= DRAIN_MAX_IDS + DONE_MAX_IDS


def test_malformed_messages_are_read_without_an_exception():
    junk = itertools.cycle([b"\xff\xfe", b"", b"   ", "text", bytearray(b"a b"), b"\x00" * 10])
    watcher = DoneWatcher(Store(EndlessPubSub(lambda n: next(junk))))
    ids = watcher.finished(0.1)
    assert ids and all(isinstance(i, str) and i and DONE_SEP not in i for i in ids)
