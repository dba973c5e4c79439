"""Pydantic validation errors as one message a person can act on, and a detail list without noise.

Pydantic reports a failed union (``inputs: str | list[str]``) once per branch, each location
tagged with the branch (``inputs.constrained-str``, ``inputs.list[constrained-str].3``), and the
first branch is rarely the one the sender meant: a list with one empty text was reported as
"Input should be a valid string". Here each union keeps only the branch that got furthest (a
branch that failed on the value's type at its root is the wrong branch), and branch tags are
dropped from locations, so the message reads ``inputs.3: String should have at least 1 character``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# How pydantic-core names union branches in a location: type names, with brackets or dashes.
_TAG = re.compile(r"^(str|int|float|bool|bytes|list|dict|tuple|set|none|any)$|[\[\]-]")


def _is_tag(part: object) -> bool:
    return isinstance(part, str) and bool(_TAG.search(part))


def _tag_index(loc: Sequence[Any]) -> int | None:
    return next((i for i, part in enumerate(loc) if _is_tag(part)), None)


def explain(errors: Sequence[Any]) -> tuple[str, list[dict[str, Any]]]:
    """``(message, detail)`` for pydantic's ``errors()``: the message names the first real cause
    as ``field.path: what is wrong``; detail lists every kept error as ``{loc, msg, type}``."""
    branches: dict[tuple[Any, ...], dict[Any, list[Any]]] = {}
    order: list[tuple[str, Any]] = []  # ("plain", error) or ("union", key), in first-seen order
    for err in errors:
        loc = tuple(err.get("loc", ()))
        i = _tag_index(loc)
        if i is None:
            order.append(("plain", err))
            continue
        key = loc[:i]
        if key not in branches:
            branches[key] = {}
            order.append(("union", key))
        branches[key].setdefault(loc[i], []).append(err)

    def score(errs: Any) -> tuple[int, int]:
        deepest = max(len(e.get("loc", ())) for e in errs)
        wrong_type_at_root = all(str(e.get("type", "")).endswith("_type") for e in errs)
        return (0 if wrong_type_at_root else 1, deepest)

    kept: list[Any] = []
    for kind, item in order:
        if kind == "plain":
            kept.append(item)
        else:
            candidates = list(branches[item].values())
            kept.extend(max(candidates, key=score))  # max keeps the first of equals
    detail = [
        {
            "loc": [p for p in e.get("loc", ()) if not _is_tag(p)],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in kept
    ]
    if not detail:
        return "the message is not valid", detail
    first = detail[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (and {len(detail) - 1} more; see detail)" if len(detail) > 1 else ""
    return f"{where}: {first['msg']}{more}", detail
