"""KQL (Kibana Query Language) to Elasticsearch query DSL, for the subset dashboards use.

The same DSL Kibana builds: ``field : "a phrase"`` is a ``match_phrase``, ``field : word`` a
``match``, ``field : *`` an ``exists``, ``field >= 5`` a ``range``; ``and``, ``or``, ``not`` and
parentheses combine them (``not`` binds tightest, then ``and``, then ``or``), each single clause
wrapped in a one-element ``should`` as Kibana does. Free text without a field, value lists
(``field : (a or b)``), wildcards inside values and nested-field syntax raise :class:`KqlError`:
a dashboard that needs them needs this module extended first, and its test says so.
"""

from __future__ import annotations

import re
from typing import Any

MAX_QUERY_CHARS = 4096  # a dashboard query is one line; anything longer is not ours
MAX_DEPTH = 32  # parentheses and ``not`` nesting

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) | (?P<op><=|>=|<|>|:) |
        "(?P<quoted>(?:[^"\\]|\\.)*)" |
        (?P<word>[^\s()":<>]+)
    )""",
    re.VERBOSE,
)
_RANGE = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}


class KqlError(ValueError):
    """A query outside the supported subset, or not KQL at all; the message says where."""


Token = tuple[str, str]  # (kind, text): open, close, op, quoted, word, keyword


def tokens(query: str) -> list[Token]:
    if len(query) > MAX_QUERY_CHARS:
        raise KqlError(f"query of {len(query)} characters; at most {MAX_QUERY_CHARS}")
    out: list[Token] = []
    pos = 0
    text = query.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise KqlError(f"cannot read the query at character {pos}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "quoted":
            value = re.sub(r"\\(.)", r"\1", value)
        elif kind == "word" and value.lower() in ("and", "or", "not"):
            kind, value = "keyword", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


def kql_to_dsl(query: str) -> dict[str, Any]:
    """The DSL of one KQL query; an empty query matches everything."""
    toks = tokens(query)
    if not toks:
        return {"match_all": {}}
    parser = _Parser(toks)
    dsl = parser.or_expr(0)
    if parser.pos != len(toks):
        raise KqlError(f"unexpected {toks[parser.pos][1]!r} after a complete query")
    return dsl


class _Parser:
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self, kind: str, text: str | None = None) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (text is not None and tok[1] != text):
            got = "the end" if tok is None else repr(tok[1])
            raise KqlError(f"expected {text or kind}, got {got}")
        self.pos += 1
        return tok[1]

    def or_expr(self, depth: int) -> dict[str, Any]:
        parts = [self.and_expr(depth)]
        while self.peek() == ("keyword", "or"):
            self.pos += 1
            parts.append(self.and_expr(depth))
        return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}

    def and_expr(self, depth: int) -> dict[str, Any]:
        parts = [self.not_expr(depth)]
        while self.peek() == ("keyword", "and"):
            self.pos += 1
            parts.append(self.not_expr(depth))
        return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}

    def not_expr(self, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise KqlError(f"query nested deeper than {MAX_DEPTH}")
        tok = self.peek()
        if tok == ("keyword", "not"):
            self.pos += 1
            return {"bool": {"must_not": self.not_expr(depth + 1)}}
        if tok is not None and tok[0] == "open":
            self.pos += 1
            inner = self.or_expr(depth + 1)
            self.take("close")
            return inner
        return self.clause()

    def clause(self) -> dict[str, Any]:
        field = self.take("word")
        if (self.peek() or ("", ""))[0] != "op":
            raise KqlError(f"{field!r} is free text: every term needs a field (field : value)")
        op = self.take("op")
        tok = self.peek()
        if tok is None or tok[0] not in ("quoted", "word"):
            raise KqlError(f"{field} {op} needs a value (value lists in parentheses are not supported)")
        self.pos += 1
        kind, value = tok
        if op in _RANGE:
            leaf: dict[str, Any] = {"range": {field: {_RANGE[op]: value}}}
        elif kind == "quoted":
            leaf = {"match_phrase": {field: value}}
        elif value == "*":
            leaf = {"exists": {"field": field}}
        elif "*" in value:
            raise KqlError(f"{field} : {value}: wildcards in values are not supported")
        else:
            leaf = {"match": {field: value}}
        return {"bool": {"should": [leaf], "minimum_should_match": 1}}
