"""Fakes shared by the intake's pure unit tests: one partition's log, which the fake reader and
consumer read (the truncation watch, the loop's rewinds)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka.structs import TopicPartition

TP = TopicPartition("inferq.requests", 0)


@dataclass
class Rec:
    offset: int
    timestamp: int
    key: bytes
    value: bytes


class Log:
    """One partition; the fake reader and consumer read it."""

    def __init__(self) -> None:
        self.records: list[Rec] = []
        self.start = 0
        self._pos = 0
        self.seeks: list[int] = []

    def write(self, n: int, tag: str) -> list[Rec]:
        new = [Rec(len(self.records) + i, 1000 + i, f"{tag}{i}".encode(), tag.encode()) for i in range(n)]
        self.records.extend(new)
        return new

    def cut(self, end: int) -> None:
        del self.records[end:]

    # reader
    def assign(self, tps):
        pass

    def beginning_offsets(self, tps):
        return {TP: self.start}

    def end_offsets(self, tps):
        return {TP: len(self.records)}

    def seek(self, tp, offset):
        self._pos = offset
        self.seeks.append(offset)

    def poll(self, timeout_ms, max_records):
        got = self.records[self._pos : self._pos + max_records]
        self._pos += len(got)
        return {TP: got} if got else {}

    def close(self):
        pass

    def position(self, tp):
        return self._pos


class GroupConsumer:
    """The intake's consumer over a :class:`Log`: positions (``positions``, else partition 0 at 0),
    paused flags, seeks, polls and commits (kafka-python semantics)."""

    def __init__(self, log, positions=None):
        self.log, self.pos = log, dict(positions or {TP: 0})
        self.paused, self.committed = set(), {}

    def assignment(self):
        return set(self.pos)

    def position(self, tp):
        return self.pos[tp]

    def pause(self, *tps):
        self.paused.update(tps)

    def resume(self, *tps):
        self.paused.difference_update(tps)

    def seek(self, tp, offset):
        self.pos[tp] = offset

    def poll(self, timeout_ms=0, max_records=500):
        out = {}
        for tp in self.pos:
            if tp in self.paused:
                continue
            got = self.log.records[self.pos[tp] : self.pos[tp] + max_records]
            if got:
                out[tp] = got
                self.pos[tp] = got[-1].offset + 1
        return out

    def commit(self, offsets=None):
        self.committed.update(
            dict(self.pos) if offsets is None else {tp: o.offset for tp, o in offsets.items()}
        )
