"""``inferq-submit``: publish texts from a file or stdin, wait for the results with a progress bar.

    inferq-submit --task embed --model all-MiniLM-L6-v2 texts.txt > results.jsonl
    echo "I want to talk to a human" | inferq-submit --task classify --model minilm-intent -
    echo "What is the capital of France?" | inferq-submit --chat --system "Answer in one word." -

One request per non-empty line (``--per-request N`` groups N lines into one request). Results are
written as JSON lines to stdout, in input order; the progress bar goes to stderr. With ``--chat``
each line is a user's message to a chat model (task ``generate``, model smollm2-135m-instruct
unless ``--model`` says otherwise), sent as a one-turn conversation after ``--system`` if given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from producers.client import InferqClient
from schemas.messages import Priority, Task
from schemas.tracing import parse_traceparent

CHAT_MODEL = "smollm2-135m-instruct"


def _lines(src: TextIO) -> Iterator[str]:
    for line in src:
        line = line.strip()
        if line:
            yield line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="inferq-submit", description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default="-", help="text file, one input per line ('-' = stdin)")
    p.add_argument("--task", choices=[t.value for t in Task], default=Task.EMBED.value)
    p.add_argument(
        "--model", default=None, help="default: all-MiniLM-L6-v2 for embed, minilm-intent for classify"
    )
    p.add_argument("--per-request", type=int, default=1, help="lines per request")
    p.add_argument("--tenant", default=None)
    p.add_argument("--priority", choices=[x.value for x in Priority], default=Priority.NORMAL.value)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--chat", action="store_true", help="each line is a user message to a chat model")
    p.add_argument("--system", default=None, help="--chat: a system message before each user message")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generate: most tokens per answer")
    p.add_argument("--timeout-s", type=float, default=300.0, help="how long to wait for all results")
    p.add_argument("--no-wait", action="store_true", help="print request ids and exit")
    p.add_argument(
        "--traceparent",
        default=None,
        help="W3C trace context every request continues (00-<trace id>-<parent id>-<flags>); "
        "default: a new trace per request",
    )
    args = p.parse_args(argv)
    if args.chat:
        args.task = Task.GENERATE.value
    defaults = {"embed": "all-MiniLM-L6-v2", "classify": "minilm-intent", "generate": CHAT_MODEL}
    model = args.model or defaults[args.task]
    err = Console(stderr=True)

    src = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    with src:
        texts = list(_lines(src))
    groups = [texts[i : i + args.per_request] for i in range(0, len(texts), args.per_request)]
    if not groups:
        err.print("[red]no input lines[/red]")
        return 2

    if args.traceparent is not None and parse_traceparent(args.traceparent) is None:
        err.print(f"[red]--traceparent {args.traceparent!r} is not a W3C traceparent[/red]")
        return 2
    generation = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
    system = [("system", args.system)] if args.system else []
    with InferqClient() as client:
        ids = [
            client.submit(
                args.task,
                model,
                None if args.chat else (g if args.per_request > 1 else g[0]),
                messages=[*system, *(("user", line) for line in g)] if args.chat else None,
                tenant=args.tenant,
                priority=args.priority,
                top_k=args.top_k,
                generation=generation,
                traceparent=args.traceparent,
            )
            for g in groups
        ]
        client.flush()
        if args.no_wait:
            for rid in ids:
                print(rid)
            return 0
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=False) as bar:
            t = bar.add_task(f"{args.task} × {model}", total=len(ids))
            results = client.wait_all(ids, args.timeout_s, on_done=lambda _r: bar.advance(t))
    failed = 0
    for rid in ids:
        res = results[rid]
        failed += res.status.value != "done"
        print(res.model_dump_json())
    if failed:
        err.print(f"[yellow]{failed} of {len(ids)} requests did not finish 'done'[/yellow]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
