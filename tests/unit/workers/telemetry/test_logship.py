"""Pure logic of the log records: de-dotting, masking, per-request fields."""

from __future__ import annotations

import logging
import os

import ecs_logging

from schemas.messages import InferenceResult, ResultStatus, Timings, new_request_id
from workers.telemetry.events import request_fields
from workers.telemetry.logs import DropTaskArguments, de_dot, mask_text
from workers.telemetry.template import field_paths, index_template


def test_de_dot_nests_dotted_keys_and_merges_objects():
    doc = {"log.level": "info", "log": {"logger": "x"}, "@timestamp": "t", "a.b.c": 1}
    assert de_dot(doc) == {"log": {"level": "info", "logger": "x"}, "@timestamp": "t", "a": {"b": {"c": 1}}}


def test_mask_text_hides_the_input_but_identifies_it():
    secret = "my card number is 4111 1111 1111 1111"
    masked = mask_text(secret)
    assert "4111" not in masked and masked.startswith("my card ") and f"{len(secret)} chars" in masked
    assert mask_text(secret) == masked and mask_text(secret + "!") != masked


def test_request_record_has_each_stage_duration():
    result = InferenceResult(
        request_id=new_request_id(),
        status=ResultStatus.DONE,
        model="m",
        timings=Timings(
            published_ms=1000, received_ms=1004, queued_ms=1005, batch_start_ms=1015, done_ms=1045
        ),
    )
    f = request_fields(result)
    assert (f["inferq.duration_ms.kafka"], f["inferq.duration_ms.intake"]) == (4, 1)
    assert (
        f["inferq.duration_ms.queue"],
        f["inferq.duration_ms.compute"],
        f["inferq.duration_ms.total"],
    ) == (
        10,
        30,
        45,
    )
    assert f["event.duration"] == 45_000_000 and f["event.outcome"] == "success"
    mapped = field_paths()
    assert all(key in mapped for key in f), set(f) - mapped


def test_the_request_record_of_a_failure_without_timings_leaves_them_out():
    f = request_fields(InferenceResult(request_id=new_request_id(), status=ResultStatus.FAILED))
    assert f["event.outcome"] == "failure" and not any(k.startswith("inferq.duration_ms") for k in f)


def test_celery_task_arguments_never_reach_a_record():
    record = logging.LogRecord("celery.app.trace", logging.INFO, "f", 1, "ok", (), None)
    record.data = {
        "id": "t1",
        "name": "inferq.infer",
        "args": "[[{'request': 'secret text'}]]",
        "kwargs": "{}",
    }
    assert DropTaskArguments().filter(record)
    doc = de_dot(ecs_logging.StdlibFormatter().format_to_ecs(record))
    assert doc["data"] == {"id": "t1", "name": "inferq.infer"}


def test_template_variants():
    stream = index_template("inferq-logs", data_stream=True)
    alias = index_template("inferq-logs", data_stream=False)
    assert stream["data_stream"] == {} and "data_stream" not in alias
    assert alias["template"]["settings"]["index.lifecycle.rollover_alias"] == "inferq-logs"
    assert {"inferq.batch.padding_waste", "inferq.request_id", "@timestamp"} <= field_paths()


def test_the_spool_is_private_to_its_owner(tmp_path):
    """Spooled records wait on disk while Elasticsearch is down: folder 0700, files 0600."""
    import stat

    from elasticsearch import Elasticsearch

    from workers.telemetry.shipper import Shipper

    old = os.umask(0o022)  # what a process started by hand usually has
    try:
        shipper = Shipper(Elasticsearch("http://127.0.0.1:9"), "x", tmp_path / "spool", flush_interval_ms=50)
        shipper._spool([{"_id": "a", "message": "request abc"}])
    finally:
        os.umask(old)
        shipper._stop.set()
    (spooled,) = (tmp_path / "spool").glob("*.ndjson")
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
