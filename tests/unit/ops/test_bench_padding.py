"""Padding waste read back from the worker's batch records (the ECS lines it writes)."""

import json

import pytest

from ops.bench.padding import Batch, BatchLog, parse_batch, summarise_padding

# a batch record as the worker writes it (nested ECS, copied from a worker log)
RECORD = {
    "@timestamp": "2026-12-02T01:37:53.027Z",
    "log.level": "info",
    "message": "batch all-MiniLM-L6-v2 655085e38328: 4 texts, 60 tokens (64 padded, 6% waste)",
    "event": {"action": "batch", "dataset": "inferq.batch"},
    "inferq": {
        "batch": {
            "compute_ms": 103.93,
            "padded_tokens": 64,
            "padding_waste": 0.0625,
            "size": 4,
            "tokens": 60,
        },
        "batch_id": "655085e38328",
    },
}


def line(size, tokens, padded, dotted=False):
    if dotted:
        doc = {"inferq.batch.size": size, "inferq.batch.tokens": tokens, "inferq.batch.padded_tokens": padded}
    else:
        doc = json.loads(json.dumps(RECORD))
        doc["inferq"]["batch"].update(size=size, tokens=tokens, padded_tokens=padded)
    return json.dumps(doc)


def test_a_batch_record_is_read_nested_or_dotted_and_anything_else_is_not():
    assert parse_batch(json.dumps(RECORD)) == Batch(4, 60, 64)
    assert parse_batch(line(2, 10, 20, dotted=True)) == Batch(2, 10, 20)
    for other in ("not json padded_tokens", "[1, 2] padded_tokens", '{"message": "request done"}', ""):
        assert parse_batch(other) is None
    bad = json.loads(json.dumps(RECORD))
    bad["inferq"]["batch"]["size"] = "4"
    assert parse_batch(json.dumps(bad)) is None


def test_only_batches_logged_since_the_mark_count(tmp_path):
    (tmp_path / "worker.log").write_text(line(32, 100, 3200) + "\n")
    (tmp_path / "intake.log").write_text(line(1, 1, 100) + "\n")  # not a worker's
    log = BatchLog(tmp_path)
    log.mark()
    with (tmp_path / "worker.log").open("a") as f:
        f.write('{"message": "request done"}\n' + line(4, 60, 64) + "\n")
    (tmp_path / "worker-2.log").write_text(line(2, 20, 20) + "\n")  # a process started after the mark
    assert sorted(log.since_mark(), key=lambda b: b.size) == [Batch(2, 20, 20), Batch(4, 60, 64)]


def test_summary_gives_mean_max_and_token_share():
    s = summarise_padding([Batch(4, 60, 64), Batch(2, 20, 20), Batch(2, 10, 20)])
    assert s["batches"] == 3 and s["max"] == 0.5
    assert s["mean"] == pytest.approx((0.0625 + 0 + 0.5) / 3)
    assert s["token_share"] == pytest.approx(1 - 90 / 104)
    assert summarise_padding([])["mean"] is None
