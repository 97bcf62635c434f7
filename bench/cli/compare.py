"""`fexbench compare`: the regression gate (fexbench.analysis.compare)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from typing import Any

from fexbench.analysis.comparisons import NotComparable
from fexbench.analysis.compare import CompareError, compare_runs, load, markdown


def cmd_compare(args: argparse.Namespace) -> int:
    explainers = None
    if args.explainers:
        names = [n.strip() for n in args.explainers.split(",") if n.strip()]
        if len(names) != 2:
            raise CompareError(f"--explainers takes two names, BASE,NEW (got {args.explainers!r})")
        explainers = (names[0], names[1])
    if args.new is None and explainers is None:
        raise CompareError("give NEW, or compare two explainers of BASE with --explainers A,B")
    if args.margin < 0 or not math.isfinite(args.margin):
        raise CompareError(f"--margin must be a non-negative number, not {args.margin}")
    base = load(args.base)
    new = load(args.new) if args.new is not None else base
    try:
        rows, warnings = compare_runs(base, new, args.margin, args.force, explainers, args.metric)
    except NotComparable as exc:
        print(f"fexbench compare: refused: {exc}", file=sys.stderr)
        return 2
    for w in warnings:
        print(w, file=sys.stderr)
    if args.json:
        print(json.dumps({"margin": args.margin, "warnings": warnings, "regression": any(r.regression for r in rows),
                          "rows": [asdict(r) for r in rows]}, indent=2, allow_nan=True))
    else:
        print(markdown(rows, args.margin))
    return 1 if any(r.regression for r in rows) else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="NEW - BASE per task and metric with paired intervals; exit 1 when "
                                              "a headline metric got worse by more than --margin")
    p.add_argument("base", metavar="BASE", help="result folder or file of the old version")
    p.add_argument("new", metavar="NEW", nargs="?", help="result folder or file of the new version "
                                                         "(omit with --explainers A,B)")
    p.add_argument("--metric", help="compare only this metric (default: every metric; the first is the headline)")
    p.add_argument("--margin", type=float, default=0.0, metavar="D",
                   help="tolerated loss on the headline metric (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--force", action="store_true", help="compare even when the ground truth differs (warns)")
    p.add_argument("--explainers", metavar="A,B", help="compare explainer A (BASE) with B (NEW), within one folder "
                                                       "or across BASE and NEW")
    p.set_defaults(func=cmd_compare)
    return p

