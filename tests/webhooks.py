"""A real HTTPS webhook receiver on a loopback port, for the webhook tests.

Its certificate comes from a throwaway CA made with trustme (valid for ``localhost``, ``127.0.0.1``
and ``::1``); the sink trusts it through ``INFERQ_WEBHOOK_CA_CERTS``. Each POST is recorded and
answered from a script (status, headers, a delay, or a trickle of bytes that never completes), then
the default answer (200).
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trustme


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float = 0.0  # > 0: send the status line one byte per this many seconds, never finishing
    endless: bool = False  # answer 200 with a chunked body that goes on (1 KiB every 10 ms, up to 5 s)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the head and body are two writes: no 40 ms delayed-ACK stall
    timeout = 5

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.received.append(Received(self.path, dict(self.headers.items()), body))
            answer = self.server.script.pop(0) if self.server.script else Answer()
        if answer.trickle_s > 0:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 200:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(answer.trickle_s)
            return
        if answer.endless:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            ends = time.monotonic() + 5
            while time.monotonic() < ends:
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                self.wfile.flush()
                time.sleep(0.01)
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.script: list[Answer] = []

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up (a refused certificate, a timeout) is part of the tests


@dataclass
class Receiver:
    port: int
    ca_file: Path
    server: _Server

    def url(self, path: str = "/hook", host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        with self.server.lock:
            self.server.script[:] = list(answers)

    @property
    def received(self) -> list[Received]:
        with self.server.lock:
            return list(self.server.received)


@contextlib.contextmanager
def receiver(folder: Path, ca: trustme.CA | None = None) -> Iterator[Receiver]:
    """A receiver on a free loopback port whose certificate ``ca`` (default: a new one) signed; the
    CA's PEM is written under ``folder``."""
    ca = ca or trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    server = _Server(("127.0.0.1", 0))
    # the handshake happens in the handler's thread, so a client refusing it never blocks accept()
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    ca_file = folder / f"webhook-ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Receiver(server.server_address[1], ca_file, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
