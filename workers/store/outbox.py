"""The outbox: terminal results waiting to be delivered beyond Redis (reply topics, webhooks).

Each script that makes a result terminal adds its scoped id to the outbox stream
(:func:`schemas.naming.outbox_key`) when the record names delivery targets (its ``deliver`` field),
in the same script run as the write itself: a result is never terminal without its entry, and,
since a terminal status is never written again, never has two. Delivery processes read the
stream through one consumer group (:data:`schemas.naming.OUTBOX_GROUP`): each entry goes to one
of them; an entry whose process died stays pending in the group and is taken over by another
after ``delivery_claim_idle_s`` (XAUTOCLAIM), so every entry is delivered at least once. A live
process touches the entries it holds (XCLAIM to itself) so they are not taken while it waits
between retries. A delivered (or given-up) entry is acknowledged and deleted, so the stream's
length is the backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from schemas.naming import OUTBOX_GROUP, outbox_key, outbox_refused_key, result_key
from schemas.settings import Settings
from workers.store.base import as_text


@dataclass(frozen=True)
class Entry:
    """One outbox entry: its stream id (``<ms>-<seq>``: the ms is when the result became
    terminal), the result's scoped id, and what the record holds now (None once it expired)."""

    entry_id: str
    sid: str
    body: bytes | None = None
    deliver: bytes | None = None

    @property
    def terminal_ms(self) -> int:
        """When the result became terminal (epoch ms): the stream id's first part."""
        return int(self.entry_id.split("-", 1)[0])


class Outbox:
    """A delivery process's view of the outbox stream: read, take over, touch, acknowledge."""

    def __init__(self, client: redis.Redis, settings: Settings, consumer: str) -> None:
        self.client = client
        self._s = settings
        self.key = outbox_key(settings)
        self.consumer = consumer
        # where the next takeover scan starts: entries this process left pending on purpose (over
        # a tenant's share) must not hide the idle entries after them from every scan
        self._cursor = "0-0"

    def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start: entries added before the first
        delivery process ran are delivered too); an existing group is kept."""
        try:
            self.client.xgroup_create(self.key, OUTBOX_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read(self, count: int, block_ms: int | None, *, mine: bool = False) -> list[Entry]:
        """Up to ``count`` entries no process has read yet, with their records (waits up to
        ``block_ms`` for one; None = do not wait). ``mine``: instead, the entries this consumer
        read before and never finished (a process restarted under the same name takes them back
        at once, without waiting for the takeover's idle time)."""
        if count <= 0:
            return []
        streams: dict[Any, Any] = {self.key: "0" if mine else ">"}
        # BLOCK 0 would wait for ever (a retry due now would wait for the next new entry): 0 = no wait
        block = None if mine or not block_ms else block_ms
        got: Any = self.client.xreadgroup(OUTBOX_GROUP, self.consumer, streams, count=count, block=block)
        rows = [row for _, entries in got or [] for row in entries if row and row[1]]
        gone = [as_text(row[0]) for _, entries in got or [] for row in entries if row and not row[1]]
        if gone:  # deleted while pending (a trimmed or flushed stream): nothing to deliver
            self.client.xack(self.key, OUTBOX_GROUP, *gone)
        return self._load(rows)

    def reclaim(self, count: int) -> list[Entry]:
        """Take over up to ``count`` entries no process has touched for ``delivery_claim_idle_s``
        (their process died, or this one left them pending for later); each call scans on from
        where the last one stopped, round the stream."""
        if count <= 0:
            return []
        idle_ms = int(self._s.delivery_claim_idle_s * 1000)
        answer: Any = self.client.xautoclaim(
            self.key, OUTBOX_GROUP, self.consumer, idle_ms, self._cursor, count=count
        )
        self._cursor = as_text(answer[0]) or "0-0"  # "0-0" again once the scan reached the end
        rows = [row for row in answer[1] if row and row[1]]  # a deleted entry comes back empty
        gone = [as_text(row[0]) for row in answer[1] if row and not row[1]]
        if gone:
            self.client.xack(self.key, OUTBOX_GROUP, *gone)
        return self._load(rows)

    def touch(self, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this process holds, so nobody takes them over."""
        if entry_ids:
            self.client.xclaim(self.key, OUTBOX_GROUP, self.consumer, 0, list(entry_ids), justid=True)

    def done(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge and delete delivered (or given-up) entries: one round trip."""
        if not entry_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(self.key, OUTBOX_GROUP, *entry_ids)
        pipe.xdel(self.key, *entry_ids)
        pipe.execute()

    def backlog(self) -> tuple[int, int]:
        """(entries in the outbox, results refused because it was full)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.get(outbox_refused_key(self._s))
        n, refused = pipe.execute()
        return int(n or 0), int(refused or 0)

    def _load(self, rows: Sequence[tuple[bytes | str, dict[bytes | str, bytes | str]]]) -> list[Entry]:
        """Each entry with its record's body and targets, read in one round trip."""
        ids = [(as_text(entry_id), _sid(fields)) for entry_id, fields in rows]
        pipe = self.client.pipeline(transaction=False)
        for _, sid in ids:
            pipe.hmget(result_key(self._s, sid), "body", "deliver")
        found = pipe.execute() if ids else []
        return [
            Entry(entry_id, sid, _raw(body), _raw(deliver))
            for (entry_id, sid), (body, deliver) in zip(ids, found, strict=True)
        ]


def _sid(fields: dict[bytes | str, bytes | str]) -> str:
    value = fields.get(b"id", fields.get("id", b""))
    return as_text(value)


def _raw(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
