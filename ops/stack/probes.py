"""Readiness probes that need no client library of the service they probe."""

from __future__ import annotations

import socket
import struct

import httpx

_PROBE_ID = 0x1F2E3D4C  # a correlation id no echo of the request itself can carry


def kafka_ok(port: int, host: str = "127.0.0.1") -> bool:
    """True once a Kafka broker answers an ApiVersions request on ``port``.

    An open port is not enough: a connect to a free port in the ephemeral range can succeed as a
    TCP self-connect (the socket talks to itself), which would echo the request back. The answer
    must carry our correlation id and no error.
    """
    client = b"inferq-ready"
    body = struct.pack(">hhih", 18, 0, _PROBE_ID, len(client)) + client  # ApiVersions v0
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = sock.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return correlation == _PROBE_ID and error == 0


def http_ok(url: str, accept: tuple[int, ...] = (200,), auth: tuple[str, str] | None = None) -> bool:
    try:
        return httpx.get(url, timeout=1.0, auth=auth).status_code in accept
    except httpx.HTTPError:
        return False
