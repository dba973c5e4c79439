"""The ceiling load generator's pure parts: burst ids and reading a result's status from its bytes."""

from ops.bench.loadgen import UNREADABLE, burst_ids, status_of
from schemas.messages import InferenceRequest


def test_ids_are_dealt_round_robin_unique_and_valid():
    parts = burst_ids("ceil1x2", 3, 10)
    assert [len(p) for p in parts] == [4, 3, 3]
    flat = [rid for p in parts for rid in p]
    assert len(set(flat)) == 10
    for rid in (flat[0], flat[-1]):  # valid ids (16+ characters of the allowed set)
        assert InferenceRequest(task="embed", model="echo-384", inputs="x", request_id=rid).request_id == rid


def test_status_from_bytes():
    assert status_of(b'{"request_id":"x","status":"done","outputs":[{"embedding":[0.1]}]}') == "done"
    assert status_of(b'{"status" : "failed"}') == "failed"
    assert status_of(None) is None
    assert status_of(b"{}") == UNREADABLE
