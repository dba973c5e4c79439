"""The callback URL policy of webhooks: which URLs a request may name, which addresses a delivery may
connect to, and the keys results are signed with.

Checked twice. At admission (the intake and the HTTP API both run :func:`check_callback_url` from
:func:`schemas.validation.check_request`), without any DNS lookup: the URL's form, its scheme, port
and host against ``INFERQ_WEBHOOK_ALLOW_HOSTS``, an IP literal against the refused ranges, and the
tenant's signing key. At send time (:mod:`workers.delivery.webhook`) the same check again (the
settings may have changed since), then every address the host resolves to is vetted with
:func:`refused_range`, and the sink connects to a vetted address only: no second lookup that a
rebinding DNS server could answer differently.

Parsing is strict where URL parsers disagree, so the host checked is the host connected to:
printable ASCII only (an international name in its ``xn--`` form), no backslash, no userinfo
(``user@``), no percent-encoding or odd characters in the host, an IPv4 host only as a canonical
dotted quad (``2130706433``, ``0x7f.1``, ``127.1`` and ``0177.0.0.1`` are read as addresses by some
resolvers and as names by others: refused), IPv6 only in brackets and without a zone, no trailing
dot, an explicit port only as 1-65535 in decimal.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from schemas.errors import CallbackRefused, ConfigurationError
from schemas.messages import MAX_CALLBACK_URL_CHARS

if TYPE_CHECKING:
    from schemas.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# the headers of a delivery (producers/webhooks.py, the receivers' helper, spells the same names)
SIGNATURE_HEADER = "X-Inferq-Signature"
TIMESTAMP_HEADER = "X-Inferq-Timestamp"
REQUEST_ID_HEADER = "X-Inferq-Request-Id"
SIGNATURE_VERSION = "v1"
SECRET_MIN_CHARS = 16

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,15}):")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII; no space, no control character
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # what WHATWG URL parsing reads as an IPv4 part
_DOTTED_QUAD = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_SECRET = re.compile(r"^[A-Za-z0-9_+/=.-]+$")
DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_HOST_CHARS = 253


@dataclass(frozen=True)
class CallbackUrl:
    """A callback URL as parsed and checked: what the sink connects to and sends."""

    scheme: str  # "https", or "http" to loopback where allowed
    host: str  # a lower-case name, a dotted quad, or IPv6 text without brackets
    port: int
    target: str  # path and query as the URL spells them ("/" when it has none; no fragment)
    address: IPAddress | None  # the host when it is an IP literal

    @property
    def authority(self) -> str:
        """``host[:port]`` as the ``Host`` header spells it (IPv6 in brackets, default port left out)."""
        host = f"[{self.host}]" if isinstance(self.address, ipaddress.IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _refuse(message: str, hint: str | None = None) -> CallbackRefused:
    return CallbackRefused(message, hint=hint)


def parse_callback_url(url: str) -> CallbackUrl:
    """Parse ``url`` strictly (see the module's docstring); raises :class:`CallbackRefused`. The
    refusals quote only the scheme or the host, never the path or query (they may hold tokens)."""
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise _refuse(f"callback_url has {len(url)} characters; the most is {MAX_CALLBACK_URL_CHARS}")
    if not _PRINTABLE.match(url) or "\\" in url:
        raise _refuse(
            "callback_url holds a space, a control character, a backslash or a non-ASCII character",
            hint="percent-encode the path and query, and write an international host name in its xn-- form",
        )
    m = _SCHEME.match(url)
    scheme = m.group(1).lower() if m else ""
    if scheme not in DEFAULT_PORTS:
        raise _refuse(f"callback_url scheme {scheme[:16]!r} is not allowed", hint="use an https:// URL")
    rest = url[m.end() :] if m else ""
    if not rest.startswith("//"):
        raise _refuse("callback_url has no host (write scheme://host/path)")
    rest = rest[2:]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, target = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise _refuse(
            "callback_url holds userinfo (user@ or user:password@)", hint="put no credentials in it"
        )
    host, port = _split_authority(authority, scheme)
    address = _parse_host(host)
    if not target.startswith("/"):
        target = "/" + target
    name = str(address) if isinstance(address, ipaddress.IPv6Address) else host.lower()
    return CallbackUrl(scheme=scheme, host=name, port=port, target=target, address=address)


def _split_authority(authority: str, scheme: str) -> tuple[str, int]:
    if authority.startswith("["):
        host, sep, after = authority[1:].partition("]")
        if not sep:
            raise _refuse("callback_url has an unclosed [ in its host")
        host = "[" + host  # marks an IPv6 literal for _parse_host
    elif authority.count(":") > 1:
        raise _refuse(
            "callback_url host has several ':'", hint="write an IPv6 address in brackets: [2001:db8::1]"
        )
    else:
        host, sep, port_text = authority.partition(":")
        after = sep + port_text
    if not after:
        return host, DEFAULT_PORTS[scheme]
    port = after[1:] if after.startswith(":") else None
    if port is None or not _PORT.match(port) or not 1 <= int(port) <= 65535:
        raise _refuse("callback_url port is not a number from 1 to 65535")
    return host, int(port)


def _parse_host(host: str) -> IPAddress | None:
    """The host's address when it is an IP literal, None for a name; refuses everything else."""
    if host.startswith("["):
        text = host[1:]
        if "%" in text:
            raise _refuse("callback_url IPv6 host has a zone (%...)", hint="name the host without a zone")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise _refuse(f"callback_url host [{text[:60]}] is not an IPv6 address") from None
    name = host.lower()
    if not name:
        raise _refuse("callback_url has an empty host")
    if len(name) > MAX_HOST_CHARS:
        raise _refuse(f"callback_url host has {len(name)} characters; the most is {MAX_HOST_CHARS}")
    if name.endswith("."):
        raise _refuse("callback_url host ends with a dot", hint="drop the trailing dot")
    if _DOTTED_QUAD.match(name):
        try:
            return ipaddress.IPv4Address(name)
        except ValueError:  # a part over 255, or a leading zero (octal to some parsers)
            raise _refuse(f"callback_url host {name!r} is not a canonical IPv4 address") from None
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        raise _refuse(
            f"callback_url host {name[:60]!r} is a numeric address in a form resolvers disagree on",
            hint="write an IPv4 address as four decimal numbers (203.0.113.7), or use a host name",
        )
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise _refuse(
            f"callback_url host {name[:60]!r} is not a valid host name",
            hint="letters, digits and hyphens in dot-separated labels (an international name in xn-- form)",
        )
    return None


def canonical(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (6to4, Teredo client, NAT64 well-known prefix)."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refused_range(address: IPAddress) -> str | None:
    """Why a delivery may not connect to ``address`` unless it is allow-listed (``loopback``,
    ``private``, ...), or None for a public unicast address. IPv4-mapped, 6to4, Teredo and NAT64
    forms are judged by the IPv4 address they reach."""
    address = canonical(address)
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None and refused_range(inner) is not None:
            return f"{refused_range(inner)}_embedded"
    for reason, hit in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link_local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("site_local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("not_global", not address.is_global),
    ):
        if hit:
            return reason
    return None


@dataclass(frozen=True)
class AllowList:
    """``INFERQ_WEBHOOK_ALLOW_HOSTS`` parsed: names, ``*.suffix`` entries, networks and ``*``."""

    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com"
    networks: tuple[IPNetwork, ...]
    any_host: bool

    @property
    def enabled(self) -> bool:
        return self.any_host or bool(self.names or self.suffixes or self.networks)

    def holds(self, address: IPAddress) -> bool:
        """Whether a listed network holds ``address`` (the explicit permission a refused range needs)."""
        address = canonical(address)
        return any(address.version == n.version and address in n for n in self.networks)

    def allows_name(self, name: str) -> bool:
        return self.any_host or name in self.names or any(name.endswith(s) for s in self.suffixes)


@lru_cache(maxsize=8)
def parse_allow_hosts(spec: str) -> AllowList:
    """Parse the allow-list; :class:`ConfigurationError` names the entry that is wrong."""
    names: set[str] = set()
    suffixes: list[str] = []
    networks: list[IPNetwork] = []
    any_host = False
    for entry in (e.strip().lower() for e in spec.split(",")):
        if not entry:
            continue
        if entry == "*":
            any_host = True
        elif entry.startswith("*."):
            _check_name(entry[2:], entry)
            suffixes.append(entry[1:])
        elif "/" in entry or ":" in entry or _DOTTED_QUAD.match(entry):
            networks.append(_parse_network(entry))
        else:
            _check_name(entry, entry)
            names.add(entry)
    return AllowList(frozenset(names), tuple(suffixes), tuple(networks), any_host)


def _parse_network(entry: str) -> IPNetwork:
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ConfigurationError(
            f"INFERQ_WEBHOOK_ALLOW_HOSTS entry {entry!r} is not a CIDR or address"
        ) from None
    if network.prefixlen == 0:
        raise ConfigurationError(
            f"INFERQ_WEBHOOK_ALLOW_HOSTS entry {entry!r} allows every address, private ones included",
            hint="use * for any public host, and list private networks one by one",
        )
    return network


def _check_name(name: str, entry: str) -> None:
    if (
        not name
        or len(name) > MAX_HOST_CHARS
        or not all(_LABEL.match(label) for label in name.split("."))
        or _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1])
    ):
        raise ConfigurationError(
            f"INFERQ_WEBHOOK_ALLOW_HOSTS entry {entry[:80]!r} is not a host name, *.suffix, CIDR or *"
        )


@lru_cache(maxsize=8)
def parse_ports(spec: str) -> tuple[tuple[int, int], ...]:
    """``443,8000-8100`` → ((443, 443), (8000, 8100)); ``*`` → every port."""
    if spec.strip() == "*":
        return ((1, 65535),)
    ranges = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        low, _, high = entry.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            first, last = 0, 0
        if not 1 <= first <= last <= 65535:
            raise ConfigurationError(
                f"INFERQ_WEBHOOK_ALLOW_PORTS entry {entry[:20]!r} is not a port or range within 1-65535"
            )
        ranges.append((first, last))
    return tuple(ranges)


@lru_cache(maxsize=8)
def parse_webhook_keys(spec: str) -> dict[str, bytes]:
    """``tenant:secret,...`` → {tenant: secret bytes} (``""`` = requests without a tenant). The tenant
    is what comes before the last ``:`` (tenant names may hold ``:``; secrets may not).
    :class:`ConfigurationError` says which entry is wrong, never echoing a secret."""
    keys: dict[str, bytes] = {}
    for i, entry in enumerate(e.strip() for e in spec.split(",")):
        if not entry:
            continue
        tenant, sep, secret = entry.rpartition(":")
        if not sep or len(secret) < SECRET_MIN_CHARS or not _SECRET.match(secret):
            raise ConfigurationError(
                f"INFERQ_WEBHOOK_KEYS entry {i + 1} is not `tenant:secret` with a secret of at least "
                f"{SECRET_MIN_CHARS} characters of A-Za-z0-9_+/=.-",
                hint="make a secret with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
            )
        keys[tenant.strip()] = secret.encode("ascii")
    return keys


def webhook_key(settings: Settings, tenant: str | None) -> bytes | None:
    """The secret results of ``tenant`` (None = no tenant) are signed with, None when it has none."""
    return parse_webhook_keys(settings.webhook_keys.get_secret_value()).get(tenant or "")


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Inferq-Signature`` value: ``v1=`` and the hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    digest = hmac.new(key, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _is_loopback_host(url: CallbackUrl) -> bool:
    return url.host == "localhost" or (url.address is not None and canonical(url.address).is_loopback)


def check_callback_url(url: str, settings: Settings, tenant: str | None) -> CallbackUrl:
    """Whether a request of ``tenant`` may name ``url`` as its callback, without any DNS lookup;
    raises :class:`CallbackRefused` saying why not. Cost: a parse of at most 2,048 characters."""
    allowed = parse_allow_hosts(settings.webhook_allow_hosts)
    if not allowed.enabled:
        raise _refuse(
            "webhooks are off on this deployment: callback_url is not accepted",
            hint="leave callback_url out and read the result over HTTP or Redis (the operator turns "
            "webhooks on with INFERQ_WEBHOOK_ALLOW_HOSTS)",
        )
    parsed = parse_callback_url(url)
    if parsed.scheme == "http" and not (settings.webhook_allow_http_loopback and _is_loopback_host(parsed)):
        raise _refuse("callback_url must be https", hint="use an https:// URL")
    if not any(low <= parsed.port <= high for low, high in parse_ports(settings.webhook_allow_ports)):
        raise _refuse(
            f"callback_url port {parsed.port} is not allowed",
            hint=f"use a port in INFERQ_WEBHOOK_ALLOW_PORTS ({settings.webhook_allow_ports})",
        )
    if parsed.address is not None:
        _check_literal(parsed.address, allowed)
    elif not allowed.allows_name(parsed.host):
        raise _refuse(
            f"callback_url host {parsed.host!r} is not in the allow-list (INFERQ_WEBHOOK_ALLOW_HOSTS)"
        )
    if webhook_key(settings, tenant) is None:
        raise _refuse(
            f"no webhook signing key is configured for tenant {tenant or '(none)'!r}",
            hint="the operator must give this tenant a key in INFERQ_WEBHOOK_KEYS",
        )
    return parsed


def _check_literal(address: IPAddress, allowed: AllowList) -> None:
    if allowed.holds(address):
        return
    reason = refused_range(address)
    if reason is not None:
        raise _refuse(f"callback_url address {address} is {reason.replace('_', ' ')}: refused")
    if not allowed.any_host:
        raise _refuse(f"callback_url address {address} is not in the allow-list (INFERQ_WEBHOOK_ALLOW_HOSTS)")
