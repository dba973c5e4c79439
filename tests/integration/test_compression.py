"""Foreign producers compress: librdkafka (kcat, confluent-kafka) and Java clients send record batches
compressed with gzip, snappy, lz4 or zstd. Each must be read and served like an uncompressed one."""

from kafka import KafkaProducer

from schemas.connections import kafka_options
from schemas.messages import InferenceRequest, ResultStatus
from schemas.naming import requests_topic

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def test_requests_in_batches_compressed_by_every_codec_are_served(client, settings):
    sent: list[str] = []
    for codec in CODECS:
        producer = KafkaProducer(**kafka_options(settings), acks="all", compression_type=codec, linger_ms=5)
        try:
            for i in range(3):  # several records, so the batch really holds a compressed run
                req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=f"{codec} text {i}")
                producer.send(
                    requests_topic(settings), key=req.request_id.encode(), value=req.wire_json().encode()
                )
                sent.append(req.request_id)
            producer.flush(timeout=30)
        finally:
            producer.close()
    results = client.wait_all(sent, timeout_s=120)
    assert {rid: r.status for rid, r in results.items()} == dict.fromkeys(sent, ResultStatus.DONE)
