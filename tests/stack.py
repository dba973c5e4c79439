"""The real local stack for the integration and slow tiers, started by the project's own ``ops.stack``.

A pytest plugin (``pytest_plugins`` in tests/conftest.py), so tests/integration and tests/slow share
the fixtures; they are session-scoped and lazy: a stack starts only when a test asks for one, so the
fast tier starts none. One stack per test session on free loopback ports under a temporary state
folder: noida-db (Kafka protocol + Elasticsearch API), redis-server, a Celery worker with the shipped
models, the intake, the result API and Flower. Torn down (and checked stopped) at the end. The
helpers below (``eventually``, ``intake_only``, ``dead_letters``, ``diagnose``) are imported from here.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from ops.drill.letters import read_dead_letters
from ops.stack import Stack, on_free_ports
from producers.client import InferqClient
from schemas.connections import kafka_options
from schemas.messages import DeadLetter, InferenceRequest
from schemas.naming import requests_topic
from schemas.settings import Settings

RESULTS_TOPIC = "test-results"  # the session stack's INFERQ_RESULTS_TOPIC


@pytest.fixture(scope="session")
def webhook_ca() -> trustme.CA:
    """The CA the session stack's delivery service trusts for webhooks (``INFERQ_WEBHOOK_CA_CERTS``):
    a receiver made with it (``tests.webhooks.receiver(folder, ca=webhook_ca)``) is reachable."""
    return trustme.CA()


def webhook_ca_file(ca: trustme.CA, folder: Path) -> Path:
    path = folder / "webhook-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def settings(tmp_path_factory, webhook_ca: trustme.CA) -> Settings:
    base = Settings(
        kafka_partitions=3,
        kafka_session_timeout_ms=6_000,
        torch_threads=1,
        worker_processes=1,
        transport_batch_size=32,
        # model versions (tests/integration/test_versions.py): the worker also serves MiniLM's int8
        # build as a version of its own (loaded in the same process: ~3 s more at start)
        worker_models="all-MiniLM-L6-v2,minilm-intent,tiny-lm,smollm2-135m-instruct,all-MiniLM-L6-v2@int8",
        # in every process's settings (unused with PLAINTEXT): no log may ever show them. Drawn at
        # run time: Hypothesis (the API fuzz test) feeds string constants of local modules into
        # generated requests, so a literal here would reach the access log as a fuzzed URL.
        kafka_sasl_password=f"sasl-{secrets.token_hex(12)}",
        flower_password=f"flower-{secrets.token_hex(12)}",
        # issue 19, webhooks (tests/integration/test_webhook_delivery.py): on, to the loopback test
        # receiver (tests/webhooks.py) only, whose certificate the session's CA signs; signing keys
        # for requests without a tenant and for tenant "acme" (test_api_security checks that no
        # service log shows them); retries 0.1 s apart, doubling, so a receiver failing twice costs
        # 0.3 s of test time
        webhook_allow_hosts="localhost,127.0.0.0/8,::1/128",
        webhook_allow_ports="*",
        webhook_keys=f":whk-{secrets.token_hex(12)},acme:whk-acme-{secrets.token_hex(12)}",
        webhook_ca_certs=str(webhook_ca_file(webhook_ca, tmp_path_factory.mktemp("webhook-ca"))),
        delivery_retry_initial_s=0.1,
        # reply topics (tests/integration/test_reply_topics.py): every result also goes to the
        # results topic; tenant "acme" may name acme.* topics, anyone replies.* topics
        results_topic=RESULTS_TOPIC,
        reply_topics="acme:acme.*,*:replies.*",
        # --- result cache (issue 20; tests/integration/test_cache.py): the stack starts its own
        # redis-server for it (the port is moved to a free one with the others); a small bound so
        # that a test can fill it past it
        cache_redis_url="redis://127.0.0.1:1/0",
        cache_max_bytes=8 * 1024 * 1024,
    )
    return on_free_ports(base, tmp_path_factory.mktemp("inferq-state"))


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    st = Stack(settings)
    try:
        st.up()
        yield st
    finally:
        st.down()
    assert not any(v["running"] for v in st.status().values()), "down left a service running"


@contextlib.contextmanager
def only(services: list[str], base: Settings, state_dir: Path) -> Iterator[Settings]:
    """A stack of just ``services`` on free ports under ``state_dir``, stopped afterwards."""
    settings = on_free_ports(base, state_dir)
    st = Stack(settings)
    try:
        st.up(only=services)
        yield settings
    finally:
        st.down()


def intake_only(base: Settings, state_dir: Path) -> contextlib.AbstractContextManager[Settings]:
    """Broker, Redis and intake and no worker (what is admitted stays ``queued``): for tests that
    watch the intake alone."""
    return only(["broker", "redis", "intake"], base, state_dir)


def redis_only(base: Settings, state_dir: Path) -> contextlib.AbstractContextManager[Settings]:
    """A redis-server of its own: for tests of the store's scripts or kombu's Redis transport."""
    return only(["redis"], base, state_dir)


@pytest.fixture
def client(stack: Stack, settings: Settings) -> Iterator[InferqClient]:
    with InferqClient(settings) as c:
        yield c


def diagnose(stack: Stack, lines: int = 15) -> str:
    """Each service's state and the tail of its log, for a failure message (CI keeps only that)."""
    parts = []
    for name, st in stack.status().items():
        parts.append(f"--- {name}: {'running' if st['running'] else 'NOT RUNNING'}")
        parts.append(stack.tail(name, lines))
    return "\n".join(parts)


def publish_embeds(s: Settings, n: int, tag: str) -> list[str]:
    """Publish ``n`` MiniLM embed requests (``<tag> <i>``) straight to the requests topic, acknowledged
    by the broker (``acks=all``); returns their ids (for tests that watch the intake alone)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_options(s), acks="all")
    try:
        ids = []
        for i in range(n):
            req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=f"{tag} {i}")
            producer.send(requests_topic(s), key=req.request_id.encode(), value=req.wire_json().encode())
            ids.append(req.request_id)
        producer.flush()
        return ids
    finally:
        producer.close()


def eventually(check: Callable[[], object], timeout_s: float = 30.0, what: str = "condition") -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    pause = 0.01
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def dead_letters(
    settings: Settings, want: set[str], *, by_record_key: bool = False, timeout_s: float = 60.0
) -> dict[str, DeadLetter]:
    """Read the dead-letter topic from the start until every name in ``want`` is seen (by request id
    or payload, or with ``by_record_key`` by the bad record's Kafka key): :mod:`ops.drill.letters`."""
    return read_dead_letters(settings, want, by_record_key=by_record_key, timeout_s=timeout_s)
