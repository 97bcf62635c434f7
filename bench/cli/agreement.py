"""`fexbench agreement`: the replication check over independent runs (fexbench.analysis.agreement)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fexbench.analysis.agreement import report
from fexbench.core.errors import UsageError


def add_parser(sub: Any) -> None:
    """Register `fexbench agreement`."""
    p = sub.add_parser("agreement", help="do independent runs of one design (different seeds) give the same rank "
                                         "groups and values? exit 1 if not")
    p.add_argument("runs", nargs="+", help="two or more result folders of the same design, different run seeds")
    p.add_argument("--min-coverage", type=float, default=0.9,
                   help="share of (task, method, run, other run) cells whose value must lie in the other run's "
                        "interval (default 0.90)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_agreement)


def cmd_agreement(args: argparse.Namespace) -> int:
    """Exit 0 when the runs replicate, 1 when they do not (2, via the CLI, for bad input)."""
    if len(args.runs) < 2:
        raise UsageError("agreement needs two or more result folders")
    for folder in args.runs:
        if not Path(folder).is_dir():
            raise UsageError(f"{folder}: no such results folder")
    text, summary, ok = report(args.runs, args.min_coverage)
    print(json.dumps(summary, indent=2, default=float) if args.json else text)
    return 0 if ok else 1

