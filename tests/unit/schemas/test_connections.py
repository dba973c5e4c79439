"""Security settings reach every client, and secrets stay out of reprs and printed URLs."""

import ssl

from schemas.connections import (
    celery_broker_ssl,
    kafka_options,
    redact_url,
    redis_retry_count,
    redis_ssl_options,
)
from schemas.settings import Settings


def test_plaintext_kafka_gets_only_the_servers():
    assert kafka_options(Settings(kafka_bootstrap_servers="k:9092")) == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_passes_every_field_through():
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw-123",
        kafka_ssl_cafile="/etc/ca.pem",
    )
    opts = kafka_options(s)
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("svc", "pw-123")
    assert opts["ssl_cafile"] == "/etc/ca.pem" and opts["ssl_check_hostname"] is True
    assert "ssl_certfile" not in opts  # unset files are not passed as empty paths


def test_secrets_are_masked_in_the_settings_repr():
    s = Settings(kafka_sasl_password="pw-123", elasticsearch_api_key="key-456", api_keys="a:b")
    text = repr(s) + str(s.model_dump())
    assert "pw-123" not in text and "key-456" not in text


def test_rediss_urls_verify_certificates_and_plain_ones_do_not_use_tls():
    s = Settings(redis_ssl_ca_certs="/etc/ca.pem", celery_broker_url="rediss://u:p@r:6380/1")
    assert redis_ssl_options(s, "redis://r:6379/0") == {}
    assert redis_ssl_options(s, "rediss://r:6380/0") == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
    }
    assert celery_broker_ssl(s) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}
    assert celery_broker_ssl(Settings()) is None


def test_redact_url_hides_only_the_password():
    assert redact_url("rediss://alice:s3cret@host:6380/0") == "rediss://alice:***@host:6380/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_retry_count_covers_the_configured_time():
    # 6 doublings from 20 ms (~1.3 s), then 1 s steps
    assert redis_retry_count(Settings(redis_retry_max_s=30)) == 6 + 29
    assert redis_retry_count(Settings(redis_retry_max_s=0.5)) == 6


def test_the_log_store_client_sends_the_api_key():
    """A loopback HTTP server stands in for Elasticsearch and records what the client sends."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from schemas.connections import elasticsearch_client

    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"version": {"number": "8.15.0"}, "tagline": "You Know, for Search"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        elasticsearch_client(Settings(elasticsearch_url=url, elasticsearch_api_key="a2V5OnNlY3JldA==")).info()
        elasticsearch_client(Settings(elasticsearch_url=url)).info()
    finally:
        server.shutdown()
    assert seen == ["ApiKey a2V5OnNlY3JldA==", None]
