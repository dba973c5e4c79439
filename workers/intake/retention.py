"""Kafka retention against the result TTL: how long a replayed request is still recognised.

The result store recognises a request id (and refuses a changed duplicate) for
``INFERQ_RESULT_TTL_S``. A consumer group that starts without committed offsets reads the requests
topic from ``earliest``, i.e. everything Kafka retains (7 days by default): records older than the
TTL would be served a second time. The topics the stack creates keep ``retention.ms`` = the TTL
(:func:`topic_retention_configs`); on a cluster managed elsewhere the intake says at start-up when
the requests topic keeps records longer (:func:`retention_warning`).
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from schemas.connections import kafka_options
from schemas.naming import requests_topic
from schemas.settings import Settings

log = logging.getLogger(__name__)


def topic_retention_configs(settings: Settings) -> dict[str, str]:
    """``topic_configs`` for topics the stack creates: records kept no longer than results."""
    return {"retention.ms": str(settings.result_ttl_s * 1000)}


def retention_ms_of(admin: Any, topic: str) -> int | None:
    """The topic's ``retention.ms`` (-1 = for ever), or None when the broker does not say."""
    answer = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    entry = answer.get("topic", {}).get(topic, {}).get("retention.ms") or {}
    value = entry.get("value")
    return int(value) if value is not None else None


def retention_warning(settings: Settings, admin: Any | None = None) -> str | None:
    """A warning when the requests topic keeps records longer than the result TTL; None when they
    agree, or when the broker cannot tell (then a debug line says so)."""
    own = admin is None
    try:
        admin = admin or KafkaAdminClient(**kafka_options(settings), request_timeout_ms=5_000)
        try:
            retention = retention_ms_of(admin, requests_topic(settings))
        finally:
            if own:
                admin.close()
    except Exception as e:  # a broker without DescribeConfigs, or away: nothing to compare
        log.debug("could not read the retention of %s: %r", requests_topic(settings), e)
        return None
    ttl_ms = settings.result_ttl_s * 1000
    if retention is None or 0 <= retention <= ttl_ms:
        return None
    kept = "for ever" if retention < 0 else f"{retention / 3_600_000:.1f} h"
    return (
        f"topic {requests_topic(settings)} keeps records {kept} but results (and duplicate detection) "
        f"last INFERQ_RESULT_TTL_S={settings.result_ttl_s} s: a consumer group without committed "
        f"offsets replays from earliest and serves records older than that again. Set the topic's "
        f"retention.ms to at most {ttl_ms}, or raise INFERQ_RESULT_TTL_S"
    )
