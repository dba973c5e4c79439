"""``inferq-ops rollout``: canary a model version, promote it, roll it back, watch it.

Every command rewrites one model's rollout hash in Redis (:mod:`workers.store.versions`); intakes
read it at most a second later, so nothing restarts. Nothing already handed off moves: a request
queued for a version stays in that version's queue and is served by its workers, so a change
neither loses nor repeats a request (the workers of a version being rolled back keep serving
what was routed to it until their queue is empty).

    inferq-ops rollout start all-MiniLM-L6-v2 896535fee0c5 --share 10
    inferq-ops rollout promote all-MiniLM-L6-v2
    inferq-ops rollout rollback all-MiniLM-L6-v2
    inferq-ops rollout status
    inferq-ops rollout watch --max-error-rate 0.05 --max-p99-ms 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import threading
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from schemas.catalog import CATALOG
from schemas.connections import redis_client
from schemas.errors import ConfigurationError, InvalidRequest
from schemas.settings import Settings
from schemas.versions import BUCKETS, Rollout, is_version
from workers.store.presence import ServedModels
from workers.store.versions import MinuteCounts, read_counts, read_rollouts, update_rollout


def add_args(r: argparse.ArgumentParser) -> None:
    sub = r.add_subparsers(dest="action", required=True)
    st = sub.add_parser("start", help="send a share of the model's unpinned requests to a new version")
    st.add_argument("model")
    st.add_argument("version", help="the version (the part after @ of a result's model_version)")
    st.add_argument("--share", type=float, default=10.0, help="percent of request ids (0-100)")
    st.add_argument("--force", action="store_true", help="even if no live worker serves the version yet")
    pr = sub.add_parser("promote", help="make the canary the model's current version")
    pr.add_argument("model")
    rb = sub.add_parser("rollback", help="drop the canary; without one, go back to the previous version")
    rb.add_argument("model")
    s = sub.add_parser("status", help="routing and per-version counts of every model")
    s.add_argument("--minutes", type=int, default=5, help="counts over this many last minutes")
    w = sub.add_parser("watch", help="roll a canary back when its error rate or p99 passes a threshold")
    w.add_argument("--minutes", type=int, default=5, help="the window judged (last N minutes)")
    w.add_argument("--max-error-rate", type=float, default=0.05)
    w.add_argument("--max-p99-ms", type=float, default=5_000.0)
    w.add_argument("--min-requests", type=int, default=50, help="judge a canary only past this many")
    w.add_argument("--every-s", type=float, default=10.0)
    w.add_argument("--once", action="store_true", help="judge once and exit")


# --- the operations (each one atomic: update_rollout retries on a concurrent change) ---------------


def _check_model(model: str) -> None:
    if model not in CATALOG:
        raise ConfigurationError(f"unknown model {model!r}; known: {', '.join(sorted(CATALOG))}")


def normalise_version(model: str, version: str) -> str:
    """``<version>`` or ``<model>@<version>`` (a result's ``model_version``) → ``<version>``."""
    named, sep, tail = version.partition("@")
    if sep:
        if named != model:
            raise ConfigurationError(f"{version!r} is a version of {named!r}, not of {model!r}")
        version = tail
    if not is_version(version):
        raise ConfigurationError(f"{version!r} is not a version (letters, digits, _ . + -; at most 64)")
    return version


def started(old: Rollout | None, model: str, version: str, share_pct: float) -> Rollout:
    """The rollout once ``version`` takes ``share_pct`` % of unpinned request ids as the canary."""
    if not 0.0 <= share_pct <= 100.0:
        raise ConfigurationError(f"--share is a percentage (0-100), not {share_pct}")
    old = old or Rollout()
    if version == old.current:
        raise ConfigurationError(f"{version} is already the current version of {model}")
    share_bp = round(share_pct * BUCKETS / 100.0)
    # a new canary gets a new key for the split; the same canary at another share keeps its own,
    # so the ids already on it stay there
    salt = old.salt if old.canary == version and old.salt else secrets.token_hex(8)
    return Rollout(
        current=old.current, canary=version, canary_share_bp=share_bp, previous=old.previous, salt=salt
    )


def promoted(old: Rollout | None, model: str) -> Rollout:
    """The rollout once its canary is the current version."""
    if old is None or old.canary is None:
        raise ConfigurationError(f"{model} has no canary to promote", hint="inferq-ops rollout start first")
    return Rollout(current=old.canary, previous=old.current)


def rolled_back(old: Rollout | None, model: str) -> Rollout | None:
    """The rollout without its canary; with none, back to the version before the last promotion
    (None: no rollout, the model's default build)."""
    if old is None:
        raise ConfigurationError(f"{model} has no rollout to roll back (it serves its default build)")
    back = (
        Rollout(current=old.current, previous=old.previous) if old.canary else Rollout(current=old.previous)
    )
    return None if back == Rollout() else back


def start(
    client: redis.Redis, s: Settings, model: str, version: str, share_pct: float, force: bool = False
) -> Rollout:
    """Route ``share_pct`` % of the model's unpinned request ids to ``version`` (the canary)."""
    _check_model(model)
    version = normalise_version(model, version)
    if not force and f"{model}@{version}" not in ServedModels(client, s).served():
        raise ConfigurationError(
            f"no live worker serves {model}@{version}",
            hint="start workers with INFERQ_WORKER_MODELS naming that build first (or pass --force)",
        )
    new = update_rollout(client, s, model, lambda old: started(old, model, version, share_pct))
    assert new is not None
    return new


def promote(client: redis.Redis, s: Settings, model: str) -> Rollout:
    """The canary becomes the current version (every unpinned request goes to it)."""
    _check_model(model)
    new = update_rollout(client, s, model, lambda old: promoted(old, model))
    assert new is not None
    return new


def rollback(client: redis.Redis, s: Settings, model: str) -> Rollout | None:
    """Drop the canary; with none, make the version before the last promotion current again."""
    _check_model(model)
    return update_rollout(client, s, model, lambda old: rolled_back(old, model))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A watch's judgement of one canary."""

    model: str
    version: str
    counts: MinuteCounts
    reason: str  # "" = healthy (or too few requests to judge)


def judge(
    client: redis.Redis,
    s: Settings,
    minutes: int,
    max_error_rate: float,
    max_p99_ms: float,
    min_requests: int,
) -> list[Verdict]:
    """Judge every canary over the last ``minutes`` and roll back the ones past a threshold."""
    verdicts = []
    for model, rollout in read_rollouts(client, s, CATALOG).items():
        if rollout.canary is None:
            continue
        counts = read_counts(client, s, model, minutes).get(rollout.canary, MinuteCounts())
        reason = ""
        if counts.total >= min_requests:
            if counts.error_rate > max_error_rate:
                reason = f"error rate {counts.error_rate:.1%} > {max_error_rate:.1%}"
            elif (p99 := counts.quantile_ms(0.99)) > max_p99_ms:
                reason = f"p99 {p99:.0f} ms > {max_p99_ms:.0f} ms"
        if reason:
            rollback(client, s, model)
        verdicts.append(Verdict(model, rollout.canary, counts, reason))
    return verdicts


def status(client: redis.Redis, s: Settings, minutes: int) -> list[dict[str, Any]]:
    """Per model with a rollout or a live version: its routing and per-version counts."""
    rollouts = read_rollouts(client, s, CATALOG)
    served = ServedModels(client, s).served()
    rows = []
    for model in sorted(CATALOG):
        live = sorted(m.partition("@")[2] for m in served if m.startswith(f"{model}@"))
        rollout = rollouts.get(model)
        if rollout is None and not live:
            continue
        counts = read_counts(client, s, model, minutes)
        rows.append(
            {
                "model": model,
                "rollout": (rollout or Rollout()).model_dump(),
                "served_versions": live,
                "counts": {
                    v: {
                        "ok": c.ok,
                        "failed": c.failed,
                        "error_rate": round(c.error_rate, 4),
                        "p99_ms_le": c.quantile_ms(0.99),
                    }
                    for v, c in sorted(counts.items())
                },
            }
        )
    return rows


# --- the command --------------------------------------------------------------------------------


def run(args: argparse.Namespace, s: Settings, console: Console) -> int:
    client = redis_client(s)
    try:
        return _run(args, s, console, client)
    except (ConfigurationError, InvalidRequest) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    finally:
        client.close()


def _run(args: argparse.Namespace, s: Settings, console: Console, client: redis.Redis) -> int:
    if args.action == "start":
        new = start(client, s, args.model, args.version, args.share, args.force)
        console.print(f"{args.model}: {_describe(new)}")
    elif args.action == "promote":
        console.print(f"{args.model}: {_describe(promote(client, s, args.model))}")
    elif args.action == "rollback":
        console.print(f"{args.model}: {_describe(rollback(client, s, args.model))}")
    elif args.action == "status":
        _print_status(console, status(client, s, args.minutes), args.minutes)
    elif args.action == "watch":
        return _watch(args, s, console, client)
    return 0


def _watch(args: argparse.Namespace, s: Settings, console: Console, client: redis.Redis) -> int:
    stop = threading.Event()
    while True:
        for v in judge(client, s, args.minutes, args.max_error_rate, args.max_p99_ms, args.min_requests):
            if v.reason:
                console.print(f"[red]rolled back[/red] {v.model}@{v.version}: {v.reason}")
            else:
                console.print(f"{v.model}@{v.version}: {v.counts.total} results, healthy or too few")
        if args.once or stop.wait(args.every_s):
            return 0


def _describe(rollout: Rollout | None) -> str:
    if rollout is None:
        return "unpinned requests go to the default build"
    current = rollout.current or "the default build"
    if rollout.canary is None:
        return f"unpinned requests go to {current}"
    share = rollout.canary_share_bp * 100.0 / BUCKETS
    return f"{share:g} % of unpinned request ids go to {rollout.canary}, the rest to {current}"


def _print_status(console: Console, rows: list[dict[str, Any]], minutes: int) -> None:
    table = Table(title=f"model versions (counts over the last {minutes} min)")
    for col in ("model", "routing", "version", "live", "ok", "failed", "error rate", "p99 ≤ ms"):
        table.add_column(col)
    for row in rows:
        rollout = Rollout(**row["rollout"])
        versions = sorted({*row["served_versions"], *row["counts"]})
        for i, v in enumerate(versions or [""]):
            c = row["counts"].get(v, {})
            table.add_row(
                row["model"] if i == 0 else "",
                _describe(None if rollout == Rollout() else rollout) if i == 0 else "",
                v,
                "yes" if v in row["served_versions"] else "no",
                str(c.get("ok", 0)),
                str(c.get("failed", 0)),
                f"{c.get('error_rate', 0.0):.1%}",
                str(c.get("p99_ms_le", "")),
            )
    console.print(table)
