"""The receivers' helper: a round trip with the sink's signing, the replay window, constant-time
comparison over every offered signature, and nothing but the standard library imported."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import producers.webhooks as receivers
from producers.webhooks import InvalidSignature, verify
from schemas import callbacks

SECRET = "receiver-secret-000000001"
BODY = b'{"request_id":"r-1","status":"succeeded"}'
NOW = 1_767_225_600


def headers(timestamp: int = NOW, secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    return {
        "x-inferq-timestamp": str(timestamp),  # names in any case
        "X-INFERQ-SIGNATURE": callbacks.sign(secret.encode(), timestamp, body),
    }


def test_what_the_sink_signs_the_receiver_verifies():
    assert verify(SECRET, headers(), BODY, now=NOW) == NOW
    assert verify(SECRET.encode(), str(NOW), BODY, headers()["X-INFERQ-SIGNATURE"], now=NOW + 299) == NOW
    assert receivers.sign(SECRET, NOW, BODY) == callbacks.sign(SECRET.encode(), NOW, BODY)


def test_the_header_names_are_the_senders():
    for name in ("SIGNATURE_HEADER", "TIMESTAMP_HEADER", "REQUEST_ID_HEADER", "SIGNATURE_VERSION"):
        assert getattr(receivers, name) == getattr(callbacks, name)


@pytest.mark.parametrize(
    ("given", "body", "now", "says"),
    [
        (headers(), BODY + b" ", NOW, "does not match"),  # a changed body
        (headers(secret="another-secret-0000000001"), BODY, NOW, "does not match"),
        (headers(), BODY, NOW + 301, "at most 300 s"),  # replayed later
        (headers(), BODY, NOW - 301, "at most 300 s"),  # dated in the future
        ({"X-Inferq-Timestamp": str(NOW)}, BODY, NOW, "missing"),
        ({**headers(), "x-inferq-timestamp": "-1"}, BODY, NOW, "Unix seconds"),
        ({**headers(), "x-inferq-timestamp": "１２３"}, BODY, NOW, "Unix seconds"),  # non-ASCII digits
        ({**headers(), "x-inferq-timestamp": "9" * 40}, BODY, NOW, "Unix seconds"),
        ({**headers(), "X-INFERQ-SIGNATURE": "v1=00"}, BODY, NOW, "does not match"),
        ({**headers(), "X-INFERQ-SIGNATURE": "v1=é"}, BODY, NOW, "does not match"),
    ],
)
def test_forged_stale_or_malformed_webhooks_are_refused(given, body, now, says):
    with pytest.raises(InvalidSignature) as e:
        verify(SECRET, given, body, now=now)
    assert says in str(e.value)


def test_a_header_may_offer_several_signatures_while_a_secret_rotates():
    good = headers()["X-INFERQ-SIGNATURE"]
    rotating = {**headers(), "X-INFERQ-SIGNATURE": f"v1={'0' * 64}, {good}"}
    assert verify(SECRET, rotating, BODY, now=NOW) == NOW
    assert verify(SECRET, headers(), BODY, tolerance_s=10, now=NOW + 10) == NOW


def test_the_helper_imports_only_the_standard_library():
    tree = ast.parse(Path(receivers.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported and {m.split(".")[0] for m in imported} <= set(sys.stdlib_module_names) | {"__future__"}
