"""Drill traffic: publish unique requests at a steady rate, then account for every one of them.

A request counts as *accepted* once the broker acknowledged it (``acks=all``). A publish that
fails (the broker is restarting) is sent again with the same id and payload until it is
acknowledged: that is what a producer should do, and the result store makes the repeat invisible.
The ledger then reads every accepted id back from Redis: *lost* = no terminal result; *duplicated*
= a result made terminal more than once (announced twice on the ``done`` channel) or changed after
it was first seen terminal.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from schemas.connections import kafka_options
from schemas.messages import InferenceRequest, ResultStatus, Task
from schemas.naming import requests_topic, result_key
from schemas.settings import Settings
from workers.store.store import TRANSIENT_ERRORS, DoneWatcher, ResultStore

MODELS = ((Task.EMBED, "all-MiniLM-L6-v2"), (Task.CLASSIFY, "minilm-intent"))
WORDS = ["refund", "order", "card", "travel", "weather", "alarm", "invoice", "password", "shipping", "music"]


def drill_request(
    tag: str, i: int, deadline_s: float | None = None, reply_topic: str | None = None
) -> InferenceRequest:
    """A short, unique request, alternating between the two shipped models; with ``deadline_s``,
    due that many seconds from now; with ``reply_topic``, its result also published there."""
    task, model = MODELS[i % len(MODELS)]
    text = f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} {tag} {i}"
    deadline = datetime.now(timezone.utc) + timedelta(seconds=deadline_s) if deadline_s else None
    return InferenceRequest(task=task, model=model, inputs=text, deadline=deadline, reply_topic=reply_topic)


@dataclass
class Publisher:
    """Publishes ``n`` requests at ``rate_per_s`` on a thread; ``accepted`` grows as acks arrive."""

    settings: Settings
    tag: str
    n: int
    rate_per_s: float
    deadline_s: float | None = None
    reply_topic: str | None = None
    accepted: dict[str, InferenceRequest] = field(default_factory=dict)
    republished: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Publisher:
        threading.Thread(target=self._run, name=f"publish-{self.tag}", daemon=True).start()
        return self

    def _run(self) -> None:
        producer = KafkaProducer(
            **kafka_options(self.settings), acks="all", linger_ms=5, retries=0, request_timeout_ms=5_000
        )
        topic, t0 = requests_topic(self.settings), time.monotonic()
        window: list[tuple[InferenceRequest, FutureRecordMetadata]] = []
        try:
            for i in range(self.n):
                wait = t0 + i / self.rate_per_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                req = drill_request(self.tag, i, self.deadline_s, self.reply_topic)
                window.append((req, producer.send(topic, key=req.request_id.encode(), value=_body(req))))
                if len(window) >= 50:  # bound the unacknowledged window
                    self._settle(producer, topic, window)
            self._settle(producer, topic, window)
        finally:
            producer.close()
            self.done.set()

    def resend(self, request_ids: set[str]) -> int:
        """Publish accepted requests again, same id and payload, until acknowledged (what a producer
        that wants end-to-end delivery does for requests that never got a result); returns how many."""
        producer = KafkaProducer(
            **kafka_options(self.settings), acks="all", linger_ms=5, retries=0, request_timeout_ms=5_000
        )
        topic = requests_topic(self.settings)
        try:
            window = [
                (req, producer.send(topic, key=rid.encode(), value=_body(req)))
                for rid in sorted(request_ids)
                if (req := self.accepted.get(rid)) is not None
            ]
            sent = len(window)
            self._settle(producer, topic, window)
        finally:
            producer.close()
        self.republished += sent
        return sent

    def _settle(
        self, producer: KafkaProducer, topic: str, window: list[tuple[InferenceRequest, FutureRecordMetadata]]
    ) -> None:
        """Wait for each send's ack; one that failed is sent again, same id and payload, until acked."""
        for req, future in window:
            pause = 0.05
            while True:
                try:
                    future.get(timeout=10)
                    self.accepted[req.request_id] = req
                    break
                except KafkaError:
                    self.republished += 1  # a duplicate the pipeline must absorb
                    time.sleep(pause)
                    pause = min(1.0, pause * 2)
                    future = producer.send(topic, key=req.request_id.encode(), value=_body(req))
        window.clear()


def _body(req: InferenceRequest) -> bytes:
    return req.wire_json().encode()


def keys_in_log(settings: Settings, timeout_s: float = 60.0) -> set[str]:
    """Every record key now in the requests topic (read from the beginning to the end offsets).

    Tells a request the pipeline lost from one the broker lost: an acknowledged write that is no
    longer in the log never reached the pipeline at all.
    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    try:
        topic = requests_topic(settings)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends, keys = consumer.end_offsets(tps), set[str]()
        give_up = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < give_up:
            for records in consumer.poll(timeout_ms=500, max_records=5_000).values():
                keys.update(r.key.decode() for r in records if r.key)
        return keys
    finally:
        consumer.close()


class Ledger:
    """Follows the ``done`` channel and reads results back, to count lost and duplicated requests."""

    def __init__(self, settings: Settings) -> None:
        self.store = ResultStore.from_settings(settings)
        self.settings = settings
        self.announced: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="ledger", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                with DoneWatcher(self.store) as watcher:
                    while not self._stop.is_set():
                        self.announced.update(watcher.finished(0.2))
            except TRANSIENT_ERRORS:
                self._stop.wait(0.2)  # Redis restarting: subscribe again (the final read is the record)

    def statuses(self, ids: list[str], *, bodies: bool = False) -> dict[str, tuple[str | None, bytes | None]]:
        """(status, body or None) of each id, in pipelined reads of 1,000 ids."""
        out: dict[str, tuple[str | None, bytes | None]] = {}
        fields = ("status", "body") if bodies else ("status",)
        for i in range(0, len(ids), 1_000):
            chunk = ids[i : i + 1_000]
            pipe = self.store.client.pipeline(transaction=False)
            for rid in chunk:
                pipe.hmget(result_key(self.settings, rid), *fields)
            for rid, got in zip(chunk, pipe.execute(), strict=True):
                out[rid] = (got[0].decode() if got[0] else None, got[1] if bodies else None)
        return out

    def wait_terminal(
        self,
        ids: Callable[[], list[str]],
        publishing: threading.Event,
        timeout_s: float,
        stalled_s: float = 60.0,
    ) -> dict[str, tuple[str | None, bytes | None]]:
        """Poll until publishing ended and every accepted id is terminal, or ``timeout_s`` passes,
        or nothing more ended for ``stalled_s`` after publishing; returns (status, body) of every id.

        Only unfinished ids are polled (status only); each id's body is read when it is first seen
        terminal and once more at the end: a difference is a duplicate write (``changed``).
        """
        terminal = {s.value for s in ResultStatus if s.terminal}
        first: dict[str, bytes | None] = {}
        self.changed: set[str] = set()
        last_progress = time.monotonic()
        give_up = last_progress + timeout_s
        while True:
            ended = publishing.is_set()
            try:
                pending = [rid for rid in ids() if rid not in first]
                now = self.statuses(pending)
                newly = [rid for rid, (st, _) in now.items() if st in terminal]
                first.update((rid, body) for rid, (_, body) in self.statuses(newly, bodies=True).items())
            except TRANSIENT_ERRORS:
                time.sleep(0.5)
                continue
            now_s = time.monotonic()
            if newly or not ended:
                last_progress = now_s
            settled = ended and len(newly) == len(pending)
            if settled or now_s > give_up or now_s - last_progress > stalled_s:
                break
            time.sleep(0.5)
        final = self.statuses(ids(), bodies=True)
        self.changed = {rid for rid, (_, body) in final.items() if rid in first and first[rid] != body}
        return final

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
