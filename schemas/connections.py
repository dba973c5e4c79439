"""How every process connects to Kafka, Redis and Elasticsearch: one place for TLS, SASL and retries.

Every client in the project is built here from :class:`~schemas.settings.Settings`, so security
settings reach all of them (intake, worker, API, producer client, exporter, ops) and none is missed.
Secrets come from :class:`pydantic.SecretStr` fields and are unwrapped only when a client is made.
Library imports are local so that importing the contract never imports a client library.
"""

from __future__ import annotations

import logging
import math
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from schemas.settings import Settings

if TYPE_CHECKING:
    import redis
    from elasticsearch import Elasticsearch

# Backoff of transient Redis errors: 20 ms doubling to this cap, for settings.redis_retry_max_s.
REDIS_BACKOFF_CAP_S = 1.0


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for printing; never log a URL as given)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every kafka-python client: servers plus TLS/SASL when configured."""
    s = settings
    opts: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap_servers,
        "security_protocol": s.kafka_security_protocol,
    }
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts.update(
            {
                k: v
                for k, v in {
                    "ssl_cafile": s.kafka_ssl_cafile,
                    "ssl_certfile": s.kafka_ssl_certfile,
                    "ssl_keyfile": s.kafka_ssl_keyfile,
                }.items()
                if v
            }
        )
        opts["ssl_check_hostname"] = True
    if s.kafka_security_protocol.startswith("SASL"):
        opts.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password.get_secret_value(),
        )
    return opts


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """:func:`kafka_options` for the producers and consumers on the request path, with
    kafka-python's own sensors off: they cost ~0.25 ms of CPU on every poll and every send
    (measured on 3.0.12, one request's round trip 1.85 → 1.54 ms), and nothing reads them; inferq
    exports its own metrics. Admin clients take no such option."""
    return {**kafka_options(settings), "metrics_enabled": False}


def confluent_options(settings: Settings) -> dict[str, Any]:
    """:func:`kafka_options` in librdkafka's words (``INFERQ_KAFKA_CLIENT=confluent``); its own log
    lines go to the ``librdkafka`` logger."""
    s = settings
    opts: dict[str, Any] = {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        "security.protocol": s.kafka_security_protocol.lower(),
        "logger": logging.getLogger("librdkafka"),
    }
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        for key, value in (
            ("ssl.ca.location", s.kafka_ssl_cafile),
            ("ssl.certificate.location", s.kafka_ssl_certfile),
            ("ssl.key.location", s.kafka_ssl_keyfile),
        ):
            if value:
                opts[key] = value
        opts["ssl.endpoint.identification.algorithm"] = "https"  # host names are checked
    if s.kafka_security_protocol.startswith("SASL"):
        opts.update(
            {
                "sasl.mechanism": s.kafka_sasl_mechanism,
                "sasl.username": s.kafka_sasl_username,
                "sasl.password": s.kafka_sasl_password.get_secret_value(),
            }
        )
    return opts


def kafka_producer(settings: Settings, *, linger_ms: int, retries: int, max_request_size: int) -> Any:
    """A producer on the request path (``acks=all``) with kafka-python's interface, from the client
    ``INFERQ_KAFKA_CLIENT`` names (:mod:`schemas.confluent` for ``confluent``)."""
    if settings.kafka_client == "confluent":
        from schemas.confluent import ConfluentProducer

        return ConfluentProducer(
            {
                **confluent_options(settings),
                "acks": "all",
                "linger.ms": linger_ms,
                "retries": retries,
                "message.max.bytes": max_request_size,
                "enable.idempotence": False,  # as kafka-python's: retries may reorder, never needed here
                # a key's partition as kafka-python and Java pick it (workers/intake/lost.py relies on it)
                "partitioner": "murmur2_random",
            }
        )
    from kafka import KafkaProducer

    return KafkaProducer(
        **kafka_client_options(settings),
        acks="all",
        linger_ms=linger_ms,
        retries=retries,
        max_request_size=max_request_size,
    )


def redis_retry_count(settings: Settings) -> int:
    """Retries that make the backoff (20 ms doubling to 1 s) last about ``redis_retry_max_s``."""
    ramp = 6  # 20 ms → 1.28 s in doublings, ~1.3 s in all
    return ramp + max(0, math.ceil(settings.redis_retry_max_s / REDIS_BACKOFF_CAP_S) - 1)


def redis_ssl_options(settings: Settings, url: str) -> dict[str, Any]:
    """TLS options for a ``rediss://`` URL (certificate checked against ``redis_ssl_ca_certs``)."""
    if not url.startswith("rediss://"):
        return {}
    opts: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_ssl_ca_certs:
        opts["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return opts


def redis_client(
    settings: Settings, url: str | None = None, *, ride_out: bool = True, **kw: Any
) -> redis.Redis:
    """A Redis client; with ``ride_out`` (the default) it rides out restarts and blips.

    Every command (and pipeline) is then retried on connection loss, timeouts and a server still
    loading its data, for about ``redis_retry_max_s``; other errors are permanent and raise at once.
    Retrying the store's scripts is safe: they only move a result forward. Probes (health checks,
    the exporter, the stack's readiness) pass ``ride_out=False`` to get an answer at once.
    """
    import redis as redis_lib
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry

    url = url or settings.redis_url
    retry = (
        Retry(ExponentialBackoff(cap=REDIS_BACKOFF_CAP_S, base=0.02), redis_retry_count(settings))
        if ride_out
        else Retry(NoBackoff(), 0)
    )
    return redis_lib.Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[redis_lib.ConnectionError, redis_lib.TimeoutError],
        health_check_interval=30,
        **redis_ssl_options(settings, url),
        **kw,
    )


def celery_broker_ssl(settings: Settings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for a ``rediss://`` broker URL, else None."""
    return redis_ssl_options(settings, settings.celery_broker_url) or None


def elasticsearch_client(settings: Settings, **kw: Any) -> Elasticsearch:
    """The log store's client: API key and CA bundle when set (https:// URLs verify certificates)."""
    from elasticsearch import Elasticsearch

    opts: dict[str, Any] = {}
    if settings.elasticsearch_api_key.get_secret_value():
        opts["api_key"] = settings.elasticsearch_api_key.get_secret_value()
    if settings.elasticsearch_ca_certs:
        opts["ca_certs"] = settings.elasticsearch_ca_certs
    return Elasticsearch(settings.elasticsearch_url, **opts, **kw)
