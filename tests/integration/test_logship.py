"""The shipper against a real ES-API server that goes away in the middle of a run."""

from __future__ import annotations

import signal

from elasticsearch import Elasticsearch

from ops.stack import Stack, on_free_ports
from schemas.settings import Settings
from tests.stack import eventually
from workers.telemetry.shipper import Shipper


def test_no_record_is_lost_while_elasticsearch_is_down(tmp_path):
    settings = on_free_ports(Settings(), tmp_path / "state")
    broker = Stack(settings)
    broker.up(only=["broker"])
    es = Elasticsearch(settings.elasticsearch_url, request_timeout=5)
    shipper = Shipper(es, "drill-logs", tmp_path / "spool", flush_interval_ms=50, retry_max_s=0.5)
    try:
        for i in range(300):
            assert shipper.offer({"@timestamp": "2026-11-23T00:00:00Z", "message": f"before {i}"})
        assert shipper.flush(30)
        es.indices.refresh(index="drill-logs")
        assert es.count(index="drill-logs")["count"] == 300  # stored before the server goes away
        es.indices.flush(index="drill-logs")  # and on disk, so the restart below keeps them
        broker.kill("broker", signal.SIGTERM)  # a stop, not a crash: what it acknowledged is kept
        eventually(lambda: broker.pid("broker") is None, 10, "the broker to stop")
        for i in range(300):
            assert shipper.offer({"@timestamp": "2026-11-23T00:00:01Z", "message": f"during {i}"})
        eventually(lambda: shipper.counters.spooled >= 300, 30, "the records to reach the spool")
        assert shipper.spool_bytes() > 0
        broker.up(only=["broker"])  # same data folder and port: the ES API comes back
        for i in range(100):
            shipper.offer({"@timestamp": "2026-11-23T00:00:02Z", "message": f"after {i}"})
        assert shipper.flush(60), "the spool was not replayed"
        es.indices.refresh(index="drill-logs")
        counts = {
            w: es.count(index="drill-logs", query={"match": {"message": w}})["count"]
            for w in ("before", "during", "after")
        }
        assert counts == {"before": 300, "during": 300, "after": 100}  # nothing lost, nothing twice
        assert shipper.counters.dropped == 0 and shipper.counters.rejected == 0
        assert shipper.counters.replayed >= 300 and not shipper.spool_files()
    finally:
        shipper.close(2)
        broker.down()
