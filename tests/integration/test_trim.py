"""The local stack's intake trims the requests topic up to what it committed (real broker, real
intake); the dead-letter topic is kept."""

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from ops.stack import LOCAL_TRIM_EVERY_S
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import deadletter_topic
from tests.stack import eventually


def test_handled_requests_are_trimmed_from_the_requests_topic_and_dead_letters_are_kept(
    client, stack, settings
):
    assert stack.s.kafka_trim_committed_every_s == LOCAL_TRIM_EVERY_S  # set by the stack for noida
    reqs = [InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=f"trim me {i}") for i in range(6)]
    placed = [client.publish(r).get(timeout=10) for r in reqs]
    placed.append(client.publish_raw("trim-bad", b"{not a request").get(timeout=10))  # dead-lettered
    results = client.wait_all([r.request_id for r in reqs], timeout_s=120)
    assert all(r.status is ResultStatus.DONE for r in results.values())
    want: dict[TopicPartition, int] = {}
    for m in placed:
        tp = TopicPartition(m.topic, m.partition)
        want[tp] = max(want.get(tp, 0), m.offset + 1)
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:

        def trimmed():
            starts = consumer.beginning_offsets(list(want))
            return all(starts[tp] >= offset for tp, offset in want.items())

        eventually(trimmed, timeout_s=LOCAL_TRIM_EVERY_S * 4, what="the handled records to be trimmed")
        dl = TopicPartition(deadletter_topic(settings), 0)
        assert consumer.beginning_offsets([dl])[dl] == 0  # dead letters stay for the operators
        assert consumer.end_offsets([dl])[dl] > 0
    finally:
        consumer.close()
