"""``inferq-ops kibana`` never takes a secret on its command line, where ``ps`` shows it (issue 15,
point 15): the password and API key come from the environment or stdin."""

from __future__ import annotations

import argparse
import io

import pytest

from ops import cli
from schemas.settings import Settings


@pytest.mark.parametrize("flag", ["--password", "--api-key"])
def test_a_secret_on_the_command_line_is_refused_without_being_used(flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["kibana", "--url", "http://127.0.0.1:1", "--user", "elastic", flag, "hunter2-secret"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "INFERQ_KIBANA_" in err and "stdin" in err and "hunter2-secret" not in err


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--user")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("--api-key-stdin", action="store_true")
    return p.parse_args(list(argv))


def credentials(args: argparse.Namespace, settings: Settings, stdin: str = ""):
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return cli._kibana_credentials(args, settings, argparse.ArgumentParser())
    finally:
        sys.stdin = old


def test_credentials_come_from_the_environment_or_one_line_of_stdin(monkeypatch):
    monkeypatch.setenv("INFERQ_KIBANA_PASSWORD", "from-env")
    assert credentials(parse("--user", "elastic"), Settings()) == (("elastic", "from-env"), None)
    piped = credentials(parse("--user", "elastic", "--password-stdin"), Settings(), "from-stdin\n")
    assert piped == (("elastic", "from-stdin"), None)
    assert credentials(parse("--api-key-stdin"), Settings(), "a2V5\n") == (None, "a2V5")
    monkeypatch.setenv("INFERQ_KIBANA_API_KEY", "env-key")
    assert credentials(parse(), Settings()) == (None, "env-key")


def test_a_user_without_any_password_is_an_error_not_an_anonymous_call(monkeypatch):
    monkeypatch.delenv("INFERQ_KIBANA_PASSWORD", raising=False)
    with pytest.raises(SystemExit):
        credentials(parse("--user", "elastic"), Settings())
