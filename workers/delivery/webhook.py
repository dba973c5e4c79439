"""The webhook sink: POSTs a terminal result to the request's ``callback_url``, signed.

One :meth:`WebhookSink.send` is one try, bounded by ``INFERQ_WEBHOOK_TOTAL_TIMEOUT_S`` in all:

1. the URL is checked again against the policy (:func:`schemas.callbacks.check_callback_url`: the
   settings may have changed since admission) and the tenant's key looked up;
2. the host is resolved here (at most ``INFERQ_WEBHOOK_CONNECT_TIMEOUT_S``), every address vetted
   (:func:`schemas.callbacks.refused_range`: private, loopback, link-local, multicast, reserved and
   their IPv4-mapped forms are refused unless an allow-listed CIDR holds them), and the connection
   goes to the first vetted address, with the URL's host as ``Host`` and TLS SNI
   (:class:`workers.delivery.pinned.PinnedBackend`: no second lookup);
3. the body is POSTed with ``X-Inferq-Signature: v1=<hex HMAC-SHA256 of "<timestamp>." + body>``,
   ``X-Inferq-Timestamp`` (Unix seconds), ``X-Inferq-Request-Id``, and ``traceparent`` when the
   result has a trace id (a new span id per try);
4. the answer's status decides: 2xx delivered; 408, 425, 429, 5xx, timeouts and connection errors
   are retryable; a redirect (never followed), any other status, a refused address and a certificate
   that does not verify are not. At most 4 KiB of the answer's body is read, and none of it kept.

httpcore (httpx's transport) is used directly: it takes a network backend (the pinned one), reads
no proxy variables from the environment, and its connections live only for the one try (no pool:
two callback hosts served by one address never share a TLS connection verified for the other).
Nothing here logs the secret, the body or the URL's path and query (they may carry tokens).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import httpcore

from schemas.callbacks import (
    REQUEST_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackUrl,
    IPAddress,
    canonical,
    check_callback_url,
    parse_allow_hosts,
    refused_range,
    sign,
    webhook_key,
)
from schemas.errors import CallbackRefused
from schemas.settings import Settings
from workers.delivery.pinned import PinnedBackend
from workers.delivery.sink import Delivery, DeliveryFailed

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 4096  # read of the receiver's answer body, then the connection is dropped
RETRYABLE_STATUS = frozenset({408, 425, 429})
USER_AGENT = "inferq-webhook/1"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
DNS_THREADS = 8  # lookups in flight at once; one stuck past its timeout holds a thread, not a sender
# lookups one tenant may have in flight (stuck ones included; more wait their turn): a tenant whose
# callback host's DNS never answers holds at most these threads, never every other tenant's lookup
DNS_PER_TENANT = DNS_THREADS // 2


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for TCP, in the resolver's order (may raise OSError)."""
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    ):
        address = canonical(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
        if address not in found:
            found.append(address)
    return found


def traceparent(trace_id: str | None) -> str | None:
    """A W3C ``traceparent`` for a try of a delivery of trace ``trace_id`` (a new span id each time),
    or None when the id is not a valid W3C trace id."""
    if trace_id is None or not _TRACE_ID.match(trace_id) or trace_id == "0" * 32:
        return None
    span = secrets.token_hex(8)
    while span == "0" * 16:
        span = secrets.token_hex(8)
    return f"00-{trace_id}-{span}-01"


class WebhookSink:
    """Sends deliveries of kind ``webhook``; see the module's docstring for one try. Thread-safe:
    each :meth:`send` has its own connection; the TLS context and the lookup threads are shared.

    :class:`DeliveryFailed` reasons (a bounded set, fit for a metric label but for the status):
    ``no_key``, ``refused_url``, ``refused_address`` (not retryable); ``dns_timeout``, ``dns_busy``,
    ``dns_error``, ``timeout``, ``connect_error``, ``connection_error``, ``tls_error`` (retryable);
    ``tls_certificate``, ``protocol_error`` (not retryable); ``http_<status>`` (retryable for 408,
    425, 429 and 5xx)."""

    kind = "webhook"
    concurrent = True  # one try can take the total timeout: the dispatcher runs tries on its pool

    def __init__(self, settings: Settings) -> None:
        self._s = settings
        self._ssl = ssl.create_default_context(cafile=settings.webhook_ca_certs or None)
        self._ssl.set_alpn_protocols(["http/1.1"])
        self._dns = ThreadPoolExecutor(max_workers=DNS_THREADS, thread_name_prefix="webhook-dns")
        self._dns_turn = threading.Condition()
        self._dns_busy: Counter[str | None] = Counter()  # lookups in flight by tenant
        # replaceable in tests (a resolver that answers what a rebinding DNS server would)
        self.resolve: Callable[[str, int], list[IPAddress]] = resolve

    def close(self) -> None:
        self._dns.shutdown(wait=False, cancel_futures=True)

    def send(self, delivery: Delivery) -> None:
        """One try; returns when the receiver answered 2xx, raises :class:`DeliveryFailed` otherwise."""
        deadline = time.monotonic() + self._s.webhook_total_timeout_s
        key = webhook_key(self._s, delivery.tenant)
        if key is None:  # its key was removed since admission: never sent unsigned
            log.warning(
                "webhook of %s not sent: its tenant has no key in INFERQ_WEBHOOK_KEYS", delivery.request_id
            )
            raise DeliveryFailed("no_key", retryable=False)
        try:
            url = check_callback_url(delivery.target, self._s, delivery.tenant)
        except CallbackRefused as e:
            log.warning("webhook of %s refused by the URL policy: %s", delivery.request_id, e.message)
            raise DeliveryFailed("refused_url", retryable=False) from None
        address = self._vetted_address(url, delivery, deadline)
        status = self._post(url, address, self._headers(delivery, url, key), delivery.body, deadline)
        if 200 <= status < 300:
            return
        retryable = status in RETRYABLE_STATUS or 500 <= status < 600
        raise DeliveryFailed(f"http_{status}", retryable=retryable)

    def _vetted_address(self, url: CallbackUrl, delivery: Delivery, deadline: float) -> IPAddress:
        request_id = delivery.request_id
        if url.address is not None:
            candidates = [canonical(url.address)]
        else:
            candidates = self._lookup(url, delivery.tenant, deadline)
        allowed = parse_allow_hosts(self._s.webhook_allow_hosts)
        reasons = []
        for address in candidates:
            reason = None if allowed.holds(address) else refused_range(address)
            if reason is None:
                return address
            reasons.append(f"{address} {reason}")
        log.warning(
            "webhook of %s refused: host %s resolves only to refused addresses (%s)",
            request_id,
            url.host,
            ", ".join(reasons[:4]) or "none",
        )
        raise DeliveryFailed("refused_address", retryable=False)

    def _lookup(self, url: CallbackUrl, tenant: str | None, deadline: float) -> list[IPAddress]:
        """The host's addresses, looked up on the DNS threads within the connect timeout. A tenant
        has at most :data:`DNS_PER_TENANT` lookups in flight; a try that gets no turn within the
        timeout fails ``dns_busy`` (retryable)."""
        wait_until = time.monotonic() + min(
            self._s.webhook_connect_timeout_s, max(0.0, deadline - time.monotonic())
        )
        with self._dns_turn:
            turn = self._dns_turn.wait_for(
                lambda: self._dns_busy[tenant] < DNS_PER_TENANT, max(0.0, wait_until - time.monotonic())
            )
            if not turn:
                raise DeliveryFailed("dns_busy", retryable=True)
            self._dns_busy[tenant] += 1

        def lookup() -> list[IPAddress]:
            try:
                return self.resolve(url.host, url.port)
            finally:
                self._release_dns(tenant)

        wait = max(0.0, wait_until - time.monotonic())
        try:
            future = self._dns.submit(lookup)
        except RuntimeError:  # closed
            self._release_dns(tenant)
            raise DeliveryFailed("dns_error", retryable=True) from None
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            if future.cancel():  # never started: its count is ours to give back
                self._release_dns(tenant)
            raise DeliveryFailed("dns_timeout", retryable=True) from None
        except (OSError, UnicodeError, ValueError):
            raise DeliveryFailed("dns_error", retryable=True) from None

    def _release_dns(self, tenant: str | None) -> None:
        with self._dns_turn:
            self._dns_busy[tenant] -= 1
            if self._dns_busy[tenant] <= 0:
                del self._dns_busy[tenant]
            self._dns_turn.notify_all()

    def _headers(self, delivery: Delivery, url: CallbackUrl, key: bytes) -> list[tuple[bytes, bytes]]:
        timestamp = int(time.time())
        headers = [
            (b"Host", url.authority.encode("ascii")),
            (b"User-Agent", USER_AGENT.encode()),
            (b"Content-Type", b"application/json"),
            (REQUEST_ID_HEADER.encode(), delivery.request_id.encode("ascii")),
            (TIMESTAMP_HEADER.encode(), str(timestamp).encode()),
            (SIGNATURE_HEADER.encode(), sign(key, timestamp, delivery.body).encode()),
            (b"X-Inferq-Attempt", str(delivery.attempt).encode()),
        ]
        parent = traceparent(delivery.trace_id)
        if parent is not None:
            headers.append((b"traceparent", parent.encode()))
        return headers

    def _post(
        self,
        url: CallbackUrl,
        address: IPAddress,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        deadline: float,
    ) -> int:
        """The answer's status; raises :class:`DeliveryFailed` for a try that got none."""
        s = self._s
        target = httpcore.URL(
            scheme=url.scheme.encode(), host=url.host.encode(), port=url.port, target=url.target.encode()
        )
        timeouts = {
            "connect": s.webhook_connect_timeout_s,
            "read": s.webhook_read_timeout_s,
            "write": s.webhook_read_timeout_s,
            "pool": s.webhook_connect_timeout_s,
        }
        try:
            with (
                httpcore.ConnectionPool(
                    ssl_context=self._ssl,
                    max_connections=1,
                    max_keepalive_connections=0,
                    retries=0,
                    network_backend=PinnedBackend(str(address), deadline),
                ) as pool,
                pool.stream(
                    "POST", target, headers=headers, content=body, extensions={"timeout": timeouts}
                ) as answer,
            ):
                read = 0
                for chunk in answer.iter_stream():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
                return answer.status
        except httpcore.TimeoutException:
            raise DeliveryFailed("timeout", retryable=True) from None
        except httpcore.ConnectError as e:
            raise _connect_failure(e) from None
        except (httpcore.NetworkError, httpcore.RemoteProtocolError, OSError):
            raise DeliveryFailed("connection_error", retryable=True) from None
        except httpcore.ProtocolError:
            raise DeliveryFailed("protocol_error", retryable=False) from None


def _connect_failure(error: BaseException) -> DeliveryFailed:
    """A certificate that does not verify is for good; any other failure to connect may pass."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DeliveryFailed("tls_certificate", retryable=False)
        if isinstance(cause, ssl.SSLError):
            return DeliveryFailed("tls_error", retryable=True)
        cause = cause.__cause__ or cause.__context__
    return DeliveryFailed("connect_error", retryable=True)
