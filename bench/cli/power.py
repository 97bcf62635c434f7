"""`fexbench power`: variance components, the minimum detectable difference of a design and the projected rank stability (fexbench.analysis.power)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from fexbench.analysis.power import report
from fexbench.core.errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("power", help="variance components and the minimum detectable difference of a design, "
                                     "from a pilot run with replicates")
    p.add_argument("results", nargs="*", default=["leaderboard/default"],
                   help="a results folder written with --replicates 2 or more (default: leaderboard/default); "
                        "several runs of one design with different seeds are pooled into one pilot")
    p.add_argument("--target", type=float, default=0.10, help="the MDD to reach (default 0.10)")
    p.add_argument("--replicates", type=int, help="the design's replicates (default: the pilot's)")
    p.add_argument("--stability-target", type=float, default=0.8,
                   help="the chance that a re-run gives the same rank groups (within one move) to reach (default 0.8)")
    p.add_argument("--stability-sims", type=int, default=500,
                   help="simulated pairs of runs per design for rank stability (default 500)")
    p.add_argument("--budget", type=float, metavar="MINUTES",
                   help="search, per task, the design (replicates x units per replicate) that fits this much wall "
                        "time and brings every task nearest its resolution target (fexbench.analysis.power.search_designs)")
    p.add_argument("--cores", type=int, default=2, help="cores the budget's run will have (default 2)")
    p.add_argument("--board", choices=("default", "full"), default="full",
                   help="whose resolution targets the budget search aims at (the tasks' resolution_targets; default full)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_power)


def cmd_power(args: argparse.Namespace) -> int:
    if args.replicates is not None and args.replicates < 2:
        raise UsageError("--replicates must be 2 or more: one replicate cannot measure the spread between zoos")
    if not 0 < args.stability_target <= 1:
        raise UsageError(f"--stability-target must be in (0, 1], not {args.stability_target}")
    if args.stability_sims < 10:
        raise UsageError(f"--stability-sims must be 10 or more, not {args.stability_sims}")
    if args.budget is not None:
        if args.budget <= 0 or args.cores < 1:
            raise UsageError(f"--budget must be positive and --cores at least 1, not {args.budget} and {args.cores}")
        from fexbench.analysis.power import budget_report
        text, summary = budget_report(args.results, args.budget, args.cores, board=args.board, target=args.target)
        print(json.dumps(summary, indent=2, default=float) if args.json else text)
        return 0
    text, summary = report(args.results, args.target, args.replicates, stability_target=args.stability_target,
                           stability_sims=args.stability_sims)
    print(json.dumps(summary, indent=2, default=float) if args.json else text)
    return 0

