"""The intake's start-up check of the requests topic's retention against the result TTL, with a fake
admin client (the real broker's answer is checked in tests/integration/test_tenancy.py)."""

from __future__ import annotations

from schemas.settings import Settings
from workers.intake.retention import retention_warning, topic_retention_configs


class FakeAdmin:
    def __init__(self, retention_ms: str | None, fail: bool = False) -> None:
        self.retention_ms, self.fail = retention_ms, fail

    def describe_configs(self, resources, config_filter="modified"):
        if self.fail:
            raise RuntimeError("DescribeConfigs not supported")
        (res,) = resources
        configs = {} if self.retention_ms is None else {"retention.ms": {"value": self.retention_ms}}
        return {"topic": {res.name: configs}}


def test_a_retention_longer_than_the_ttl_is_warned_about():
    s = Settings(result_ttl_s=86_400)
    warning = retention_warning(s, FakeAdmin(str(7 * 86_400_000)))
    assert warning is not None and "168.0 h" in warning and "86400" in warning
    assert "for ever" in (retention_warning(s, FakeAdmin("-1")) or "")


def test_agreeing_or_unknown_retention_says_nothing():
    s = Settings(result_ttl_s=86_400)
    assert retention_warning(s, FakeAdmin("86400000")) is None
    assert retention_warning(s, FakeAdmin(None)) is None
    assert retention_warning(s, FakeAdmin("1", fail=True)) is None


def test_topics_are_created_with_the_ttl_as_retention():
    assert topic_retention_configs(Settings(result_ttl_s=3_600)) == {"retention.ms": "3600000"}
