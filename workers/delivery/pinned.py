"""An httpcore network backend that connects to one vetted address and holds every socket operation
to one deadline.

Why: the webhook sink resolves the callback host itself and vets each address
(:func:`schemas.callbacks.refused_range`); the HTTP client must then connect to that address, not
resolve the name again (a rebinding DNS server could answer a private address the second time). The
URL keeps its host, so the ``Host`` header, TLS SNI and certificate check are the URL's host.
httpcore's timeouts are per socket operation; a receiver that trickles its answer a byte at a time
would never trip them, so every operation here waits at most until the delivery's deadline
(``INFERQ_WEBHOOK_TOTAL_TIMEOUT_S``).
"""

from __future__ import annotations

import ssl
import time
import typing

import httpcore


class DeadlinePassed(httpcore.ReadTimeout):
    """The delivery's total time ran out (raised before an operation that would start past it)."""


def _clamp(timeout: float | None, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlinePassed("the delivery's total timeout passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A stream whose every read, write and TLS handshake ends by the deadline (monotonic seconds)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, self._deadline))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, self._deadline))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout, self._deadline))
        return DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Every TCP connection goes to ``address`` (whatever host the URL names) by ``deadline``."""

    def __init__(self, address: str, deadline: float) -> None:
        self._address = address
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            self._address, port, _clamp(timeout, self._deadline), local_address, socket_options
        )
        return DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a webhook never connects to a Unix socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, max(0.0, self._deadline - time.monotonic())))
