"""The result store's Lua scripts: every transition of a request's record, atomic on the server.

The source lives beside this module, in ``lua/*.lua`` (shipped as package data), so it is read,
diffed and linted as Lua; it is loaded once, at import. Each script documents its KEYS and ARGV in
its header. Shared KEYS (where a script takes them): [1] the request's result hash, [2] requests in
flight (all models), [3] in flight for the request's model, [4] the deadlines sorted set, [5] the
pending sorted set (queued requests by admission time), [6] the tenant's requests in flight, [7] and
[8] the tenant's stored result bytes (sorted set by expiry, sizes hash). Members are scoped ids
(``<tenant>~<request id>``, :func:`schemas.naming.scoped_id`). The in-flight sets score each id by
when its result hash expires, so an id whose result expired while queued stops counting by itself;
terminal transitions remove it (idempotent: no count leaks).
"""

from __future__ import annotations

from importlib.resources import files


def load(name: str) -> str:
    """The source of ``lua/<name>.lua`` (a missing file is a broken install: it raises at import)."""
    return files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


# helpers the store prepends to ADMIT, ADVANCE, CANCEL and EXPIRE_DUE (keep_bytes, prune_bytes, ...)
BYTES = load("bytes")
ADMIT = load("admit")
ADVANCE = load("advance")
CANCEL = load("cancel")
PROGRESS = load("progress")
EXPIRE_DUE = load("expire_due")
CLAIM_STALE = load("claim_stale")
UNSEEN = load("unseen")

__all__ = ["ADMIT", "ADVANCE", "BYTES", "CANCEL", "CLAIM_STALE", "EXPIRE_DUE", "PROGRESS", "UNSEEN", "load"]
