"""``inferq-ops``: run the whole pipeline locally.

inferq-ops up        # broker (Kafka + ES API), redis, worker, intake, delivery, result API, Flower
inferq-ops status    # exits 1 unless every service runs and is ready; shows Flower's login
inferq-ops demo      # starts what is missing, pushes real texts through, prints a summary
inferq-ops bench     # raw model vs the pipeline vs peers; continuous vs static generation; the ceiling
inferq-ops bench --ceiling [--profile]   # the pipeline's own top req/s and CPU per request by process
inferq-ops drill     # kill -9 / restart each service under load: lost and duplicated → drill.json
inferq-ops kibana --url http://localhost:5601 --user elastic --password-stdin   # dashboards into a Kibana
inferq-ops api-key --tenant acme   # a result-API key for a tenant, and its INFERQ_API_KEYS entry
inferq-ops rollout start MODEL VERSION --share 10 | promote MODEL | rollback MODEL | status | watch
inferq-ops reference # regenerate docs/configuration.md and docs/redis-keys.md from the code
inferq-ops down      # stops exactly what `up` started
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ops.bench.cache import CachePlan, bench_cache, print_cache
from ops.bench.ceiling import CeilingPlan, bench_ceiling
from ops.bench.peers import PEERS
from ops.bench.report import write_json
from ops.bench.run import BenchPlan, run_bench
from ops.demo import run_demo
from ops.drill.faults import FAULTS
from ops.drill.replies import REPLY_DRILLS
from ops.drill.rollout import ROLLOUT
from ops.drill.run import POISON, DrillPlan, run_drills
from ops.kibana.importer import import_dashboards
from ops.reference import main as reference_main
from ops.rollout import add_args as rollout_args
from ops.rollout import run as run_rollout
from ops.stack import Stack
from producers.auth import check_tenant, digest, new_key
from schemas.connections import redact_url
from schemas.errors import ConfigurationError, InferqError
from schemas.naming import log_index
from schemas.settings import Settings, get_settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inferq-ops", description="Run the inferq stack locally.")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start every service (idempotent); exits 2 if one dies or is not ready")
    u.add_argument("--only", default="", help="comma-separated services to start (default: all)")
    sub.add_parser("down", help="stop every service started from this state folder")
    st = sub.add_parser("status", help="show each service: pid, ready, log")
    st.add_argument("--json", action="store_true")
    d = sub.add_parser("demo", help="publish real texts through Kafka and summarise the results")
    d.add_argument("-n", "--requests", type=int, default=240)
    d.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    _bench_args(sub.add_parser("bench", help="raw model, the pipeline and peer servers under the same load"))
    _drill_args(sub.add_parser("drill", help="fault drills under load; writes drill.json"))
    _kibana_args(sub.add_parser("kibana", help="import the data view and dashboards into a Kibana"))
    a = sub.add_parser(
        "api-key", help="make an API key for a tenant (prints the key and its INFERQ_API_KEYS entry)"
    )
    a.add_argument("--tenant", required=True)
    rollout_args(sub.add_parser("rollout", help="canary, promote, roll back model versions (no restarts)"))
    r = sub.add_parser("reference", help="write docs/configuration.md and docs/redis-keys.md from the code")
    r.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file drifted")
    return p


def _bench_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--quick", action="store_true", help="fewer levels, shorter windows (a smoke run)")
    b.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated peers to compare ({', '.join(PEERS)}); '' for none",
    )
    b.add_argument("--out", type=Path, default=Path("."), help="where bench.json and bench.png go")
    b.add_argument(
        "--generate",
        choices=["also", "only", "no"],
        default="also",
        help="generation, continuous vs static batching: with the rest (also), alone (only) or not (no)",
    )
    b.add_argument(
        "--ceiling",
        action="store_true",
        help="only the ceiling: the pipeline's top req/s with the instant model echo-384, CPU per request "
        "by process, and its scaling with intake replicas and worker processes",
    )
    b.add_argument(
        "--cache",
        action="store_true",
        help="only the result cache: req/s with it off and on, alternated, on a Zipf mix of repeated "
        "texts (bench.json `cache`, merged into an existing file)",
    )
    b.add_argument(
        "--profile",
        action="store_true",
        help="with --ceiling: py-spy the intake(s) and worker(s) during the burst (collapsed stacks "
        "in OUT/ceiling-profile/, top self-time functions printed)",
    )
    b.add_argument(
        "--ceiling-layouts",
        type=_layouts,
        default=None,
        metavar="IxW,...",
        help="with --ceiling: the layouts to scale over, intake replicas x worker processes "
        "(default 1x1,2x1,1x2,2x2; the settings' own layout is always measured)",
    )
    b.add_argument(
        "--generators",
        type=int,
        choices=range(1, 17),
        default=None,
        metavar="N",
        help="with --ceiling: load-generator processes publishing the burst (default 1; more when one "
        "client publishes slower than the pipeline takes)",
    )
    b.add_argument(
        "--ceiling-webhooks",
        action="store_true",
        help="with --ceiling: every request names a callback_url to a local HTTPS receiver (its own "
        "process, its CPU reported apart); CPU per request counts the delivery service until the last "
        "webhook arrived",
    )
    b.add_argument(
        "--burst-s",
        type=_burst_s,
        default=None,
        help="with --ceiling: seconds the headline burst should last at the warm-up's rate (default 20)",
    )


def _drill_args(dr: argparse.ArgumentParser) -> None:
    dr.add_argument("--requests", type=int, default=10_000, help="requests per drill")
    dr.add_argument("--rate", type=float, default=150.0, help="requests published per second")
    dr.add_argument(
        "--only",
        default=",".join(FAULTS),
        help=f"comma-separated drills ({', '.join([*FAULTS, POISON, *REPLY_DRILLS, ROLLOUT])}); '' for none",
    )
    dr.add_argument(
        "--overload-s", type=float, default=60.0, help="seconds at 3 × capacity after the drills; 0 = skip"
    )
    dr.add_argument("--out", type=Path, default=Path("."), help="where drill.json goes")


def _kibana_args(k: argparse.ArgumentParser) -> None:
    k.add_argument("--url", required=True, help="Kibana base URL, e.g. http://localhost:5601")
    k.add_argument("--user", help="basic-auth user; the password from INFERQ_KIBANA_PASSWORD or stdin")
    k.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    k.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read a Kibana/Elasticsearch API key from stdin (or set INFERQ_KIBANA_API_KEY)",
    )
    # refused with a hint: a secret on the command line is visible to every user in `ps`
    k.add_argument("--password", help=argparse.SUPPRESS, nargs="?", const="")
    k.add_argument("--api-key", help=argparse.SUPPRESS, nargs="?", const="")
    k.add_argument("--space", help="Kibana space id (default space when omitted)")


@dataclasses.dataclass
class Run:
    """One command's inputs: its arguments (and parser, for usage errors), console, settings, stack."""

    args: argparse.Namespace
    parser: argparse.ArgumentParser
    console: Console
    settings: Settings
    stack: Stack


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.cmd == "reference":
        return reference_main(["--check"] if args.check else [])
    settings = get_settings()
    run = Run(args, p, Console(), settings, Stack(settings))
    try:
        return COMMANDS[args.cmd](run)
    except InferqError as e:
        run.console.print(f"[red]error:[/red] {escape(str(e))}")  # log tails hold [brackets]
        return 2


def _names(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def cmd_up(run: Run) -> int:
    only = _names(run.args.only)
    unknown = sorted(set(only) - {svc.name for svc in run.stack.services()})
    if unknown:
        run.parser.error(f"unknown service(s) {', '.join(unknown)}")
    _up(run.stack, run.console, only or None)
    _print_endpoints(run.console, run.stack.s)
    return 0


def cmd_down(run: Run) -> int:
    stopped = run.stack.down()
    run.console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_status(run: Run) -> int:
    status = run.stack.status()
    login = run.stack.flower_login()
    if run.args.json:
        status["flower"] = {**status.get("flower", {}), "login": login}
        print(json.dumps(status, indent=2))
    else:
        _print_status(run.console, status, login)
    return 0 if run.stack.healthy(status) else 1


def cmd_bench(run: Run) -> int:
    args = run.args
    peers = _names(args.peers)
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        run.parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.ceiling_webhooks and not args.ceiling:
        run.parser.error("--ceiling-webhooks goes with --ceiling")
    if args.profile and not args.ceiling:
        run.parser.error("--profile goes with --ceiling")
    if args.ceiling:
        return _bench_ceiling(run)
    if args.cache:
        return _bench_cache(run)
    plan = BenchPlan.quick(peers) if args.quick else BenchPlan(peers=peers)
    plan = dataclasses.replace(
        plan,
        embed=args.generate != "only",
        generate=None if args.generate == "no" else plan.generate,
        ceiling=None if args.generate == "only" else plan.ceiling,
    )
    run_bench(run.settings, plan, args.out, run.console)
    return 0


def _bench_cache(run: Run) -> int:
    plan = CachePlan.quick() if run.args.quick else CachePlan()
    with run.console.status("cache bench") as status:
        data = bench_cache(run.settings, plan, lambda m: status.update(m))
    path = run.args.out / "bench.json"
    merged = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    write_json(path, {**merged, "cache": data})
    print_cache(run.console, data)
    run.console.print(f"wrote {path} (cache)")
    return 0


def _bench_ceiling(run: Run) -> int:
    args = run.args
    plan = CeilingPlan.quick() if args.quick else CeilingPlan()
    plan = dataclasses.replace(plan, profile=args.profile, webhooks=args.ceiling_webhooks)
    if args.ceiling_layouts is not None:
        plan = dataclasses.replace(plan, layouts=args.ceiling_layouts)
    if args.generators is not None:
        plan = dataclasses.replace(plan, generators=args.generators)
    if args.burst_s is not None:
        plan = dataclasses.replace(
            plan, burst_s=args.burst_s, scaling_burst_s=min(plan.scaling_burst_s, args.burst_s)
        )
    data = bench_ceiling(run.settings, plan, args.out, run.console)
    return 0 if data["ceiling_lost"] == data["ceiling_duplicated"] == 0 else 1


def _burst_s(value: str) -> float:
    """Seconds, 0 < s ≤ 600 (the burst's results stay in Redis until the stack is discarded)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{value!r}: want seconds, more than 0 and at most 600")
    return seconds


def _layouts(value: str) -> tuple[tuple[int, int], ...]:
    """``1x1,2x2`` → ((1, 1), (2, 2)): intake replicas x worker processes, each 1..16."""
    out = []
    for part in _names(value):
        intakes, sep, workers = part.partition("x")
        if not (
            sep and intakes.isdigit() and workers.isdigit() and 1 <= int(intakes) <= 16 >= int(workers) >= 1
        ):
            raise argparse.ArgumentTypeError(f"{part!r}: want INTAKESxWORKERS, e.g. 2x1 (each 1..16)")
        out.append((int(intakes), int(workers)))
    return tuple(out)


def cmd_drill(run: Run) -> int:
    args = run.args
    drills = _names(args.only)
    unknown = sorted(set(drills) - {*FAULTS, POISON, *REPLY_DRILLS, ROLLOUT})
    if unknown:
        known = ", ".join([*FAULTS, POISON, *REPLY_DRILLS, ROLLOUT])
        run.parser.error(f"unknown drill(s) {', '.join(unknown)}; choose from {known}")
    drill_plan = DrillPlan(tuple(drills), args.requests, args.rate, overload_s=args.overload_s)
    drilled = run_drills(run.settings, drill_plan, args.out, run.console)
    run.console.print(f"wrote {args.out / 'drill.json'}")
    return 0 if drilled["ok"] else 1


def cmd_api_key(run: Run) -> int:
    tenant = run.args.tenant
    try:
        check_tenant(tenant)
    except ConfigurationError as e:
        run.parser.error(str(e))
    key = new_key()
    run.console.print(f"key (give it to {tenant}; it is not stored): {key}")
    run.console.print(f"INFERQ_API_KEYS entry: {tenant}:{digest(key)}")
    return 0


def cmd_kibana(run: Run) -> int:
    args = run.args
    if args.password is not None or args.api_key is not None:
        run.parser.error(
            "secrets on the command line show in `ps`: set INFERQ_KIBANA_PASSWORD or "
            "INFERQ_KIBANA_API_KEY, or pipe it with --password-stdin / --api-key-stdin"
        )
    auth, api_key = _kibana_credentials(args, run.settings, run.parser)
    report = import_dashboards(args.url, auth=auth, api_key=api_key, space=args.space)
    run.console.print(f"data view {report.data_view}; {report.imported} saved objects imported")
    for err in report.errors:
        run.console.print(f"[red]not imported:[/red] {escape(str(err))}")
    return 1 if report.errors else 0


def cmd_demo(run: Run) -> int:
    was_up = all(v["running"] for v in run.stack.status().values())
    _up(run.stack, run.console)
    try:
        summary = run_demo(run.settings, run.args.requests, run.console)
    finally:
        if not (was_up or run.args.keep):
            run.stack.down()
            run.console.print("stack stopped (use --keep, or `inferq-ops up` first, to leave it running)")
    return 0 if summary["by_status"].get("done") == summary["requests"] else 1


COMMANDS: dict[str, Callable[[Run], int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "bench": cmd_bench,
    "drill": cmd_drill,
    "api-key": cmd_api_key,
    "kibana": cmd_kibana,
    "demo": cmd_demo,
    "rollout": lambda run: run_rollout(run.args, run.settings, run.console),
}


def _up(stack: Stack, console: Console, only: list[str] | None = None) -> None:
    with console.status("starting the stack…") as spinner:

        def ready(name: str, seconds: float) -> None:
            console.print(f"  [green]✓[/green] {name} ready ({seconds:.1f} s)")
            spinner.update(f"starting the stack… ({name} up)")

        stack.up(only=only, on_ready=ready)


def _kibana_credentials(
    args: argparse.Namespace, settings: Settings, p: argparse.ArgumentParser
) -> tuple[tuple[str, str] | None, str | None]:
    """Basic auth or an API key, from the environment (settings) or one line of stdin."""
    if args.password_stdin and args.api_key_stdin:
        p.error("--password-stdin and --api-key-stdin both read stdin: give one")
    piped = sys.stdin.readline().rstrip("\r\n") if args.password_stdin or args.api_key_stdin else ""
    api_key = piped if args.api_key_stdin else settings.kibana_api_key.get_secret_value()
    if args.user:
        password = piped if args.password_stdin else settings.kibana_password.get_secret_value()
        if not password:
            p.error("--user needs a password: set INFERQ_KIBANA_PASSWORD or use --password-stdin")
        return (args.user, password), None
    if args.password_stdin:
        p.error("--password-stdin needs --user")
    return None, api_key or None


def _print_status(
    console: Console, status: dict[str, dict[str, object]], login: dict[str, object] | None = None
) -> None:
    t = Table("service", "pid", "running", "ready", "log")
    for name, st in status.items():
        style = None if st["running"] and st["ready"] else "red"
        row = (name, str(st["pid"] or "-"), str(st["running"]), str(st["ready"]), str(st["log"]))
        t.add_row(*row, style=style)
    console.print(t)
    down = [name for name, st in status.items() if not (st["running"] and st["ready"])]
    if down:
        console.print(f"[red]not running or not ready:[/red] {', '.join(down)} (see their logs)")
    if login:
        where = f" (in {login['password_file']}, mode 0600)" if login["password_file"] else ""
        line = f"Flower {login['url']}  user {login['user']}  password {login['password']}{where}"
        console.print(escape(line))


def _print_endpoints(console: Console, s: Settings) -> None:
    console.print(
        f"  Kafka      {s.kafka_bootstrap_servers}\n  Redis      {redact_url(s.redis_url)}\n"
        f"  Result API http://{s.api_host}:{s.api_port}/docs\n"
        f"  Flower     http://127.0.0.1:{s.flower_port} (user {s.flower_user}; password: inferq-ops status)\n"
        f"  ES API     {s.elasticsearch_url} (logs: index {log_index(s)})\n"
        f"  Metrics    http://127.0.0.1:{s.metrics_port}/metrics\n"
        + (
            f"  Prometheus http://127.0.0.1:{s.prometheus_port}"
            if shutil.which("prometheus")
            else "  Prometheus not installed: apt-get install -y prometheus (then `inferq-ops up` starts it)"
        )
    )


if __name__ == "__main__":
    sys.exit(main())
