"""A webhook receiver for the ceiling bench's webhooks-on runs, in a process of its own.

An HTTPS server on a loopback port that answers every POST ``200`` and counts them; its certificate
comes from a throwaway CA (trustme, a dev dependency: the bench runs from a checkout) whose PEM the
bench stack trusts (``INFERQ_WEBHOOK_CA_CERTS``). It lives in its own process so that its CPU (TLS
handshakes, parsing) is read apart from the pipeline's (:attr:`WebhookReceiver.pid`) and never
counted as the client's or the delivery service's.
"""

from __future__ import annotations

import http.server
import multiprocessing as mp
import ssl
import time
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

READY_TIMEOUT_S = 30.0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 10

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        counter: Synchronized[int] = self.server.counter  # type: ignore[attr-defined]
        with counter.get_lock():
            counter.value += 1

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(cert_file: str, key_file: str, port: Synchronized[int], counter: Synchronized[int]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.counter = counter  # type: ignore[attr-defined]
    port.value = server.server_address[1]
    server.serve_forever(poll_interval=0.05)


class WebhookReceiver:
    """Start with :meth:`start` (writes the CA's PEM under ``folder``), read :attr:`received`,
    stop with :meth:`close`."""

    def __init__(self, folder: Path) -> None:
        import trustme  # a dev dependency, needed only by webhooks-on bench runs

        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        self.ca_file = folder / "bench-webhook-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._cert, self._key = folder / "bench-webhook-cert.pem", folder / "bench-webhook-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(self._cert))
        leaf.private_key_pem.write_to_path(str(self._key))
        ctx = mp.get_context("spawn")
        self._port: Synchronized[int] = ctx.Value("i", 0)
        self._count: Synchronized[int] = ctx.Value("q", 0)
        self._proc: BaseProcess = ctx.Process(
            target=_serve,
            args=(str(self._cert), str(self._key), self._port, self._count),
            name="bench-webhook-receiver",
            daemon=True,
        )

    def start(self) -> WebhookReceiver:
        self._proc.start()
        give_up = time.monotonic() + READY_TIMEOUT_S
        while self._port.value == 0:
            if not self._proc.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the bench's webhook receiver did not start")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self._proc.pid is not None
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port.value}/hook"

    @property
    def received(self) -> int:
        """POSTs answered so far."""
        return int(self._count.value)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
