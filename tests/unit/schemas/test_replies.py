"""The reply-topic policy (INFERQ_REPLY_TOPICS), the pipeline's own topics refused, and a request's
delivery targets as stored with its record."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.errors import ConfigurationError, ErrorCode, InvalidRequest, ReplyTopicRefused
from schemas.messages import InferenceRequest
from schemas.replies import Targets, check_reply_topic, parse_policy, reserved_topic, targets_json
from schemas.settings import Settings
from schemas.validation import validate_request

POLICY = "acme:acme.results, acme:acme.team.*, *:shared.results, public.results, beta:beta-*"


@pytest.mark.parametrize(
    ("tenant", "topic", "allowed"),
    [
        ("acme", "acme.results", True),
        ("acme", "acme.results2", False),  # exact means exact
        ("acme", "acme.team.a", True),  # prefix
        ("acme", "acme.team", False),  # the prefix is "acme.team." with its dot
        ("acme", "shared.results", True),  # "*" is every tenant
        (None, "shared.results", True),  # ... and requests without one
        (None, "public.results", True),  # no "tenant:" = requests without a tenant
        ("acme", "public.results", False),
        ("other", "acme.results", False),  # another tenant's topic
        ("beta", "beta-x", True),
        (None, "beta-x", False),
    ],
)
def test_the_policy_allows_exact_topics_prefixes_and_everyone_entries(tenant, topic, allowed):
    assert parse_policy(POLICY).allows(tenant, topic) is allowed


def test_an_empty_policy_allows_nothing():
    assert not parse_policy("").allows(None, "x")
    assert not parse_policy(" , ").allows("acme", "x")


BAD = ["acme:a*b", ":topic", "a:b c", "ac*me:topic", "acme:", "acme:t,ac me:t"]


@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_entry_is_a_configuration_error_naming_it(bad):
    with pytest.raises(ConfigurationError, match="INFERQ_REPLY_TOPICS"):
        parse_policy(bad)


@pytest.mark.parametrize("bad", BAD)
def test_the_setting_refuses_a_malformed_list_at_start(bad):
    with pytest.raises(ValidationError):
        Settings(reply_topics=bad)


def test_a_tenant_name_may_hold_colons_the_topic_is_after_the_last_one():
    policy = parse_policy("org:team/a:replies.*, *:*")
    assert policy.allows("org:team/a", "replies.x")
    assert Settings(reply_topics="org:team/a:replies.*, *:*, plain, ").reply_topics


def test_the_pipelines_own_topics_are_refused_whatever_the_policy_says():
    s = Settings(reply_topics="*:*", topic_prefix="inferq")
    for topic in ("inferq.requests", "inferq.deadletter", "inferq.stream", "__consumer_offsets"):
        assert reserved_topic(topic, s)
        with pytest.raises(ReplyTopicRefused, match="own topics"):
            check_reply_topic(topic, "acme", s)
    check_reply_topic("inferq.replies", "acme", s)  # the prefix alone is not reserved


def test_validation_refuses_a_topic_outside_the_tenants_list_with_the_typed_error():
    s = Settings(reply_topics="acme:acme.*")
    base = {"schema_version": 1, "task": "embed", "model": "echo-384", "inputs": "x", "tenant": "acme"}
    assert validate_request({**base, "reply_topic": "acme.out"}, s).reply_topic == "acme.out"
    with pytest.raises(InvalidRequest) as e:
        validate_request({**base, "reply_topic": "other.out"}, s)
    assert e.value.code is ErrorCode.REPLY_TOPIC_REFUSED
    with pytest.raises(InvalidRequest) as e:  # the topic pattern still comes first
        validate_request({**base, "reply_topic": "bad topic"}, s)
    assert e.value.code is ErrorCode.VALIDATION_ERROR


def test_targets_name_the_reply_topic_the_results_topic_and_the_url_once_each():
    req = InferenceRequest(task="embed", model="echo-384", inputs="x", reply_topic="r")
    assert targets_json(req, Settings()) == '{"topics":["r"]}'
    assert targets_json(req, Settings(results_topic="all")) == '{"topics":["r","all"]}'
    assert targets_json(req, Settings(results_topic="r")) == '{"topics":["r"]}'
    plain = InferenceRequest(task="embed", model="echo-384", inputs="x")
    assert targets_json(plain, Settings()) == ""  # nothing stored: no outbox entry
    hooked = plain.model_copy(update={"callback_url": "https://h.example/x"})
    assert Targets.from_json(targets_json(hooked, Settings())) == Targets((), "https://h.example/x")


@pytest.mark.parametrize(
    "stored", [None, b"", b"not json", b"[1]", b'{"topics": "x"}', b'{"topics":[1,2]}', b"{" * 10_000]
)
def test_stored_targets_that_are_absent_or_malformed_name_nothing(stored):
    assert not Targets.from_json(stored)
