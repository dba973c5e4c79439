"""The reply-topics drill's verdict: distinct keys, repeats, differing values, equality with Redis."""

from __future__ import annotations

from ops.drill.replies import reply_report


def test_repeats_of_the_same_bytes_pass_and_anything_else_fails():
    stored = {"a": b"A", "b": b"B", "c": b"C"}
    ok = reply_report(stored, stored, {"a": [b"A", b"A"], "b": [b"B"], "c": [b"C"], "other": [b"x"]}, 1.0)
    assert (ok["records"], ok["distinct_keys"], ok["repeated_records"], ok["ok"]) == (4, 3, 1, True)
    missing = reply_report(stored, stored, {"a": [b"A"], "b": [b"B"]}, 1.0)
    assert missing["missing"] == 1 and missing["examples"]["missing"] == ["c"] and not missing["ok"]
    differing = reply_report(stored, stored, {"a": [b"A", b"A2"], "b": [b"B"], "c": [b"C"]}, 1.0)
    assert differing["keys_with_differing_values"] == 1 and not differing["ok"]
    not_redis = reply_report(stored, stored, {"a": [b"Z"], "b": [b"B"], "c": [b"C"]}, 1.0)
    assert not_redis["values_not_equal_to_redis"] == 1 and not not_redis["ok"]
