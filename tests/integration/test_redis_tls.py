"""The result store and the Celery broker over TLS with an ACL user (``rediss://user:pw@…``).

A real redis-server with TLS only (plain port off) and a user of its own; certificates from a
throwaway CA (trustme). The store verifies the server's certificate against INFERQ_REDIS_SSL_CA_CERTS.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from ops.stack import free_port, redis_binary
from schemas.messages import InferenceRequest
from schemas.naming import model_queue
from schemas.results import queued_result
from schemas.settings import Settings
from workers.store.store import Admission, ResultStore, request_digest
from workers.transport.app import TASK_INFER, make_app

PASSWORD = "tls-test-pw-9f3"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    d = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    port = free_port()
    (d / "redis.conf").write_text(f"user default off\nuser inferq on >{PASSWORD} ~* &* +@all\n")
    proc = subprocess.Popen(
        [
            redis_binary(),
            str(d / "redis.conf"),
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(d / "server.pem"),
            "--tls-key-file", str(d / "server.pem"),
            "--tls-ca-cert-file", str(d / "ca.pem"),
            "--tls-auth-clients", "no",
            "--save", "",
            "--dir", str(d),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        client = redis.Redis(
            port=port, ssl=True, ssl_ca_certs=str(d / "ca.pem"), username="inferq", password=PASSWORD
        )
        give_up = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < give_up, "redis-server with TLS did not start"
                time.sleep(0.1)
        yield port, d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(10)


def tls_settings(port: int, ca: Path, password: str = PASSWORD, ca_certs: str | None = None) -> Settings:
    return Settings(
        redis_url=f"rediss://inferq:{password}@127.0.0.1:{port}/0",
        celery_broker_url=f"rediss://inferq:{password}@127.0.0.1:{port}/1",
        redis_ssl_ca_certs=str(ca) if ca_certs is None else ca_certs,
        redis_retry_max_s=0.5,
    )


def test_the_store_works_over_tls_with_an_acl_user(tls_redis) -> None:
    port, ca = tls_redis
    store = ResultStore.from_settings(tls_settings(port, ca))
    req = InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs="over tls")
    assert store.admit([(request_digest(req), queued_result(req, {}))]) == [Admission.NEW]
    held = store.get(req.request_id)
    assert held is not None and held.status.value == "queued"


def test_celery_publishes_over_tls(tls_redis) -> None:
    port, ca = tls_redis
    s = tls_settings(port, ca)
    app = make_app(s)
    queue = model_queue(s, "all-MiniLM-L6-v2")
    app.send_task(TASK_INFER, args=[[]], queue=queue)
    broker = redis.Redis(
        port=port, db=1, ssl=True, ssl_ca_certs=str(ca), username="inferq", password=PASSWORD
    )
    assert broker.llen(queue) == 1


def test_an_unverified_server_or_a_wrong_password_is_refused(tls_redis, tmp_path) -> None:
    port, ca = tls_redis
    other = trustme.CA()  # a CA that did not sign the server's certificate
    other.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        ResultStore.from_settings(tls_settings(port, ca, ca_certs=str(tmp_path / "other.pem"))).in_flight()
    with pytest.raises(redis.AuthenticationError):
        ResultStore.from_settings(tls_settings(port, ca, password="wrong")).in_flight()
    with pytest.raises(redis.ConnectionError):  # plain redis:// to a TLS-only port
        ResultStore.from_settings(
            Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_retry_max_s=0.5)
        ).in_flight()
