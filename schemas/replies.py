"""Where a terminal result is sent besides Redis: the reply-topic policy and a request's targets.

``INFERQ_REPLY_TOPICS`` lists the topics each tenant may name as ``reply_topic``, comma separated:

- ``acme:acme.results`` — tenant ``acme`` may name exactly ``acme.results``;
- ``acme:acme.*`` — any topic starting with ``acme.`` (a trailing ``*`` makes a prefix);
- ``*:shared.results`` — every tenant, and requests without a tenant;
- ``public.results`` (no ``tenant:``) — requests without a tenant.

Topic names cannot hold ``:`` (tenant names may), so an entry splits at its last ``:``; tenant
names cannot hold ``*``. Whatever the list says, the pipeline's own topics (requests, dead
letters, streams) and Kafka's internal ones (``__*``) are refused: a reply there would be read
back as a request, a letter or a chunk. The policy is checked at admission (intake and HTTP API, through
:func:`schemas.validation.check_request`) and again by the Kafka sink before it sends.

The targets of a request are fixed at admission and stored with its record (the result hash's
``deliver`` field, :func:`targets_json`): its allowed ``reply_topic``, the deployment-wide
``INFERQ_RESULTS_TOPIC`` and its ``callback_url`` (checked by the webhook policy).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from schemas.errors import ConfigurationError, ReplyTopicRefused
from schemas.messages import NAME_PATTERN, InferenceRequest
from schemas.naming import deadletter_topic, requests_topic, stream_topic
from schemas.settings import Settings

ANY_TENANT = "*"
_TENANT = re.compile(NAME_PATTERN)
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")  # Kafka's topic characters (a prefix may be empty)
MAX_TARGETS_JSON_CHARS = 8_192  # a stored ``deliver`` value read back longer than this is refused


@dataclass(frozen=True)
class TopicPolicy:
    """The parsed allow-list: per tenant ("" = requests without a tenant, ``*`` = everyone) the
    exact topics and the prefixes it may name."""

    exact: dict[str, frozenset[str]] = field(default_factory=dict)
    prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def allows(self, tenant: str | None, topic: str) -> bool:
        for who in (tenant or "", ANY_TENANT):
            if topic in self.exact.get(who, ()):
                return True
            if any(topic.startswith(p) for p in self.prefixes.get(who, ())):
                return True
        return False


@lru_cache(maxsize=8)
def parse_policy(spec: str) -> TopicPolicy:
    """Parse ``INFERQ_REPLY_TOPICS`` (see the module docstring); a malformed entry is a
    :class:`ConfigurationError` naming it (refusing it quietly would refuse every request)."""
    exact: dict[str, set[str]] = {}
    prefixes: dict[str, list[str]] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        tenant, sep, topic = entry.rpartition(":")
        tenant, topic = tenant.strip(), topic.strip()
        if sep and not tenant:
            raise ConfigurationError(f"INFERQ_REPLY_TOPICS entry {entry!r} has an empty tenant before ':'")
        prefix = topic.endswith("*")
        name = topic[:-1] if prefix else topic
        bad_tenant = bool(sep) and tenant != ANY_TENANT and not _TENANT.fullmatch(tenant)
        if not _TOPIC_CHARS.fullmatch(name) or bad_tenant or not (name or prefix):
            raise ConfigurationError(
                f"INFERQ_REPLY_TOPICS entry {entry!r} is not `tenant:topic`, `tenant:prefix*` or `topic`"
            )
        if prefix:
            prefixes.setdefault(tenant, []).append(name)
        else:
            exact.setdefault(tenant, set()).add(name)
    return TopicPolicy(
        {t: frozenset(v) for t, v in exact.items()}, {t: tuple(v) for t, v in prefixes.items()}
    )


def reserved_topic(topic: str, settings: Settings) -> bool:
    """Whether ``topic`` is one of the pipeline's own topics or one of Kafka's internal ones."""
    own = {requests_topic(settings), deadletter_topic(settings), stream_topic(settings)}
    return topic in own or topic.startswith("__")


def check_reply_topic(topic: str, tenant: str | None, settings: Settings) -> None:
    """Raise :class:`ReplyTopicRefused` unless ``tenant`` may publish results to ``topic``."""
    who = f"tenant {tenant!r}" if tenant else "requests without a tenant"
    if reserved_topic(topic, settings):
        raise ReplyTopicRefused(f"reply_topic {topic!r} is one of the pipeline's own topics")
    if not parse_policy(settings.reply_topics).allows(tenant, topic):
        raise ReplyTopicRefused(f"reply_topic {topic!r} is not among the topics {who} may name")


def check_request_replies(request: InferenceRequest, settings: Settings) -> None:
    """The reply-topic check of one request (nothing to check without a ``reply_topic``)."""
    if request.reply_topic is not None:
        check_reply_topic(request.reply_topic, request.tenant, settings)


@dataclass(frozen=True)
class Targets:
    """Where one terminal result goes besides Redis: Kafka topics (the request's ``reply_topic``,
    then ``INFERQ_RESULTS_TOPIC``, without repeats) and a webhook URL."""

    topics: tuple[str, ...] = ()
    url: str | None = None

    def __bool__(self) -> bool:
        return bool(self.topics or self.url)

    def to_json(self) -> str:
        """Compact JSON for the result hash's ``deliver`` field."""
        out: dict[str, object] = {}
        if self.topics:
            out["topics"] = list(self.topics)
        if self.url:
            out["url"] = self.url
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Targets:
        """The targets a stored ``deliver`` value names; nothing for an absent, oversized or
        malformed one (it is data read back from Redis: never an exception)."""
        if not raw or len(raw) > MAX_TARGETS_JSON_CHARS:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        topics = data.get("topics")
        url = data.get("url")
        return cls(
            tuple(t for t in topics if isinstance(t, str)) if isinstance(topics, list) else (),
            url if isinstance(url, str) else None,
        )


def targets_of(request: InferenceRequest, settings: Settings) -> Targets:
    """Where ``request``'s terminal result goes (already checked at validation)."""
    topics = [t for t in (request.reply_topic, settings.results_topic) if t]
    return Targets(tuple(dict.fromkeys(topics)), request.callback_url)


def targets_json(request: InferenceRequest, settings: Settings) -> str:
    """:func:`targets_of` as stored (``""`` = none, so the store records nothing)."""
    targets = targets_of(request, settings)
    return targets.to_json() if targets else ""
