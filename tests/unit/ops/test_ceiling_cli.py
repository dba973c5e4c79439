"""``bench --ceiling``'s arguments and its tables (from a bench.json-shaped dict, no stack)."""

import argparse

import pytest
from rich.console import Console

from ops.bench.ceiling_report import print_ceiling
from ops.cli import _layouts, parser


def test_layouts_parse_and_refuse():
    assert _layouts("1x1, 2x1,1x2") == ((1, 1), (2, 1), (1, 2))
    for bad in ("1", "0x1", "1x17", "ax1", "1*2"):
        with pytest.raises(argparse.ArgumentTypeError, match="INTAKESxWORKERS"):
            _layouts(bad)
    args = parser().parse_args(
        ["bench", "--ceiling", "--ceiling-layouts", "2x2", "--burst-s", "5", "--profile"]
    )
    assert args.ceiling and args.profile and args.ceiling_layouts == ((2, 2),) and args.burst_s == 5.0


def cpu(total):
    parts = {"client": 0.2, "broker": 0.05, "intake": 0.5, "redis": 0.25}
    return {**parts, "worker": total - sum(parts.values()), "total": total}


def test_tables_print_every_group_and_layout():
    row = {"intake_replicas": 1, "worker_processes": 1, "req_per_s": 700.0, "cpu_ms_per_request": cpu(2.0)}
    head = {
        **row,
        "requests": 14000,
        "whole_burst_req_per_s": 650.0,
        "publish_req_per_s": 2000.0,
        "cpu_busy_cores": 1.4,
        "steady_cpu_ms_per_request": cpu(1.9),
        "by_status": {"done": 13999, "failed": 1},
        "profile": {
            "worker": {
                "file": "w.txt",
                "samples": 10,
                "top": [{"function": "infer (tasks.py)", "self_pct": 60.0, "total_pct": 90.0}],
            }
        },
    }
    data = {
        "ceiling": {"model": "echo-384", "headline": head},
        "ceiling_lost": 0,
        "ceiling_duplicated": 0,
        "ceiling_scaling": [
            {**row, "lost": 0, "duplicated": 0},
            {**row, "intake_replicas": 2, "req_per_s": 900.0, "lost": 0, "duplicated": 0},
        ],
    }
    console = Console(record=True, width=160)
    print_ceiling(console, data)
    text = console.export_text()
    for needle in ("700", "900", "client", "redis", "worker", "failed 1", "infer (tasks.py)", "60.0"):
        assert needle in text, needle
