"""The log index: its mapping (every field a record can carry), ILM policy and write target.

On a real Elasticsearch the records go to a data stream managed by an ILM policy (rollover daily or
at 5 GB, delete after 14 days). Servers without ILM or data streams (the local ES-API server has
neither) get the same template without ``data_stream`` and a classic rollover alias over
``<index>-000001``; that fallback logs one warning, never an error. Writes use ``op_type: create``
in both cases, so a record replayed from the spool with the same ``_id`` is not stored twice.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError

log = logging.getLogger(__name__)

KEYWORD = {"type": "keyword", "ignore_above": 1024}
TEXT = {"type": "text"}
LONG = {"type": "long"}
INT = {"type": "integer"}
FLOAT = {"type": "float"}
DATE = {"type": "date"}
BOOL = {"type": "boolean"}


def _obj(**props: dict[str, Any]) -> dict[str, Any]:
    return {"properties": props}


# Every field a record can hold; records are de-dotted before shipping, so these nest.
PROPERTIES: dict[str, Any] = {
    "@timestamp": DATE,
    "message": TEXT,
    "ecs": _obj(version=KEYWORD),
    "log": _obj(
        level=KEYWORD,
        logger=KEYWORD,
        origin=_obj(file=_obj(name=KEYWORD, line=INT), function=KEYWORD),
    ),
    "process": _obj(name=KEYWORD, pid=LONG, thread=_obj(id=LONG, name=KEYWORD)),
    "service": _obj(name=KEYWORD),
    "host": _obj(hostname=KEYWORD),
    "error": _obj(type=KEYWORD, message=TEXT, stack_trace={"type": "text", "index": False}),
    "event": _obj(dataset=KEYWORD, action=KEYWORD, outcome=KEYWORD, duration=LONG),
    # W3C trace context (schemas.tracing): a request's records carry its trace and span; a batch's
    # record its own span and its requests' traces (a list), so one trace id finds the whole path
    "trace": _obj(id=KEYWORD),
    "span": _obj(id=KEYWORD),
    # Celery's task log records (arguments are stripped before logging: they hold inputs)
    "data": _obj(
        id=KEYWORD,
        name=KEYWORD,
        runtime=FLOAT,
        return_value=KEYWORD,
        exc=TEXT,
        description=TEXT,
        hostname=KEYWORD,
        # a task that failed inside Celery rather than in its own code (celery.app.trace._log_error)
        internal=BOOL,
        traceback={"type": "text", "index": False},
    ),
    "inferq": _obj(
        request_id=KEYWORD,
        # per store write (stderr): the ids of the requests it ended, how many, how many not done
        request_ids=KEYWORD,
        results=_obj(count=INT, failed=INT),
        batch_id=KEYWORD,
        tenant=KEYWORD,
        model=KEYWORD,
        model_version=KEYWORD,
        task=KEYWORD,
        stage=KEYWORD,
        status=KEYWORD,
        priority=KEYWORD,
        error_code=KEYWORD,
        inputs=INT,
        # per request: how many of its inputs came from the result cache
        cache=_obj(hits=INT),
        input_preview=KEYWORD,
        source=_obj(topic=KEYWORD, partition=INT, offset=LONG),
        celery_task=KEYWORD,
        # per request: milliseconds spent in each stage, and in all
        duration_ms=_obj(
            kafka=FLOAT, intake=FLOAT, queue=FLOAT, compute=FLOAT, total=FLOAT, first_token=FLOAT
        ),
        # per generate request: tokens generated, and why each input ended
        generated_tokens=INT,
        finish_reason=KEYWORD,
        # per delivery beyond Redis (workers.delivery): reply topics, webhooks
        delivery=_obj(sink=KEYWORD, outcome=KEYWORD, reason=KEYWORD, attempt=INT),
        # per batch
        batch=_obj(
            size=INT,
            tokens=INT,
            padded_tokens=INT,
            padding_waste=FLOAT,
            compute_ms=FLOAT,
            failed=INT,
            device=KEYWORD,
        ),
        # per delivery attempt of a result to a reply topic or webhook (issue 19; the Kibana panels
        # in ops/kibana/dashboards.py read these): sink kafka|webhook, outcome sent|retried|failed
    ),
}


class LogTarget(str, Enum):
    DATA_STREAM = "data_stream"
    ROLLOVER_ALIAS = "rollover_alias"


def ilm_policy() -> dict[str, Any]:
    return {
        "phases": {
            "hot": {"actions": {"rollover": {"max_age": "1d", "max_primary_shard_size": "5gb"}}},
            "delete": {"min_age": "14d", "actions": {"delete": {}}},
        }
    }


def index_template(index: str, *, data_stream: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {"number_of_shards": 1}
    if data_stream:
        settings["index.lifecycle.name"] = index
    else:
        settings["index.lifecycle.rollover_alias"] = index
    body: dict[str, Any] = {
        "index_patterns": [f"{index}*"],
        "priority": 200,
        "template": {
            "settings": settings,
            # unknown fields are kept in _source but not indexed: a record never fails on them
            "mappings": {"dynamic": False, "properties": PROPERTIES},
        },
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def field_paths(props: dict[str, Any] | None = None, prefix: str = "") -> set[str]:
    """Every leaf field of the mapping as a dotted path (``inferq.batch.size``)."""
    out: set[str] = set()
    for name, spec in (props or PROPERTIES).items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out |= field_paths(spec["properties"], path + ".")
        else:
            out.add(path)
    return out


def install(es: Elasticsearch, index: str) -> LogTarget:
    """Create the policy, template and write target (idempotent); returns which kind it made."""
    try:
        es.ilm.put_lifecycle(name=index, policy=ilm_policy())
        es.indices.put_index_template(name=index, **index_template(index, data_stream=True))
        try:
            es.indices.get_data_stream(name=index)
        except NotFoundError:
            es.indices.create_data_stream(name=index)
        return LogTarget.DATA_STREAM
    except ApiError as e:
        if e.meta.status not in (400, 404, 405):
            raise
        log.warning(
            "Elasticsearch at %s has no ILM or data streams (%s); using index template %s with a "
            "rollover alias instead",
            _where(es),
            e.message,
            index,
        )
    es.indices.put_index_template(name=index, **index_template(index, data_stream=False))
    if not es.indices.exists_alias(name=index):
        es.indices.create(index=f"{index}-000001", aliases={index: {"is_write_index": True}})
    return LogTarget.ROLLOVER_ALIAS


def _where(es: Elasticsearch) -> str:
    try:
        return ", ".join(str(n.base_url) for n in es.transport.node_pool.all())
    except Exception:  # only for the message
        return "the configured URL"
