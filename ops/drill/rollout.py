"""The rollout drill: canary a model version, promote it and roll it back under steady traffic.

On a stack of its own (broker, Redis, intake, one worker serving all-MiniLM-L6-v2's default build,
its int8 build and minilm-intent), requests for both models are published at a steady rate while
``inferq-ops rollout`` (:mod:`ops.rollout`) sends 10 % of MiniLM's unpinned requests to the int8
version, then promotes it, then rolls it back to the default build, nothing restarted. Then every
accepted request is accounted for: *lost* (no terminal result), *duplicated* (made terminal twice,
or changed after), and *misrouted*: a result whose ``model_version`` is not the version the intake
routed it to at admission (the result hash's ``route``, kept by ADMIT; "" = the default build).
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops import rollout
from ops.drill.traffic import Ledger, Publisher
from ops.stack import Stack, on_free_ports
from producers.client import InferqClient
from schemas.naming import result_key
from schemas.settings import Settings
from schemas.versions import Rollout, version_of
from workers.store.presence import ServedModels

ROLLOUT = "rollout"
SERVICES = ["broker", "redis", "worker", "intake"]
MODEL = "all-MiniLM-L6-v2"
VARIANT = "int8"
SHARE_PCT = 10.0
# when each step happens, as the share of the requests accepted so far
STEPS = ((0.2, "start"), (0.45, "promote"), (0.7, "rollback"))


def rollout_settings(settings: Settings, state_dir: Path) -> Settings:
    """Free ports, its own folder, no log shipping; the worker serves both MiniLM builds."""
    return on_free_ports(settings, state_dir).model_copy(
        update={
            "log_ship": False,
            "requeue_queued_after_s": min(settings.requeue_queued_after_s, 45.0),
            "worker_models": f"{MODEL},minilm-intent,{MODEL}@{VARIANT}",
        }
    )


def run_rollout(
    settings: Settings,
    requests: int,
    rate_per_s: float,
    timeout_s: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    rs = rollout_settings(settings, (settings.state_dir / "drill-rollout").resolve())
    stack = Stack(rs)
    t0 = time.monotonic()
    try:
        stack.up(only=SERVICES)
        default, canary = _versions(rs)
        ledger = Ledger(rs)
        try:
            pub = Publisher(rs, f"rollout-{secrets.token_hex(3)}", requests, rate_per_s).start()
            steps = _steps(rs, pub, requests, canary, progress)
            final = ledger.wait_terminal(lambda: list(pub.accepted), pub.done, timeout_s)
            routes = _routes(ledger, list(final))
        finally:
            ledger.close()
    finally:
        stack.down()
    lost = sorted(rid for rid, (st, _) in final.items() if st in (None, "queued", "running"))
    duplicated = {rid for rid in final if ledger.announced[rid] > 1} | (ledger.changed & set(final))
    served: Counter[str] = Counter()
    misrouted: list[str] = []
    for rid, (_, body) in final.items():
        result = json.loads(body) if body else {}
        if result.get("model") != MODEL:
            continue  # minilm-intent: no rollout, the control
        got = version_of(result.get("model_version"))
        want = routes.get(rid) or default
        served[f"{'routed ' + routes[rid] if routes.get(rid) else 'default route'} → {got}"] += 1
        if got != want:
            misrouted.append(rid)
    return {
        "model": MODEL,
        "versions": {"default": default, "canary": canary},
        "canary_share_pct": SHARE_PCT,
        "steps": steps,
        "requests": len(final),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "duplicated": len(duplicated),
        "misrouted": len(misrouted),
        "misrouted_ids": misrouted[:10],
        "by_status": dict(Counter(st or "missing" for st, _ in final.values())),
        "minilm_by_route_and_version": dict(sorted(served.items())),
        "ok": not lost and not duplicated and not misrouted,
        "wall_s": round(time.monotonic() - t0, 1),
    }


def _versions(rs: Settings) -> tuple[str, str]:
    """(default version, int8 version): one unpinned request names the default, the worker's
    advertisement the other."""
    with InferqClient(rs) as client:
        served = ServedModels(client.store.client, rs)
        give_up = time.monotonic() + 180
        while len(mine := [m for m in served.served() if m.startswith(f"{MODEL}@")]) < 2:
            if time.monotonic() > give_up:
                raise TimeoutError(f"the worker never advertised two versions of {MODEL}: {mine}")
            time.sleep(0.5)
        default = version_of(client.wait(client.submit("embed", MODEL, "which version?")).model_version)
    others = [m.partition("@")[2] for m in mine if m.partition("@")[2] != default]
    if default is None or len(others) != 1:
        raise RuntimeError(f"cannot tell the default version from {mine} (default {default})")
    return default, others[0]


def _steps(
    rs: Settings, pub: Publisher, requests: int, canary: str, progress: Callable[[int], None] | None
) -> list[dict[str, Any]]:
    """Run each rollout step once its share of the requests is accepted; returns when each ran."""
    done: list[dict[str, Any]] = []
    with InferqClient(rs) as client:
        r = client.store.client
        for at, step in STEPS:
            while len(pub.accepted) < requests * at and not pub.done.is_set():
                if progress is not None:
                    progress(len(pub.accepted))
                time.sleep(0.05)
            new: Rollout | None
            if step == "start":
                new = rollout.start(r, rs, MODEL, canary, SHARE_PCT)
            elif step == "promote":
                new = rollout.promote(r, rs, MODEL)
            else:
                new = rollout.rollback(r, rs, MODEL)
            state = new.model_dump() if new is not None else None
            done.append({"step": step, "after_accepted": len(pub.accepted), "rollout": state})
    if progress is not None:
        progress(len(pub.accepted))
    return done


def _routes(ledger: Ledger, ids: list[str]) -> dict[str, str]:
    """The version each request was routed to at admission ("" = the default build)."""
    out: dict[str, str] = {}
    for i in range(0, len(ids), 1_000):
        chunk = ids[i : i + 1_000]
        pipe = ledger.store.client.pipeline(transaction=False)
        for rid in chunk:
            pipe.hget(result_key(ledger.settings, rid), "route")
        for rid, got in zip(chunk, pipe.execute(), strict=True):
            out[rid] = got.decode() if got else ""
    return out
