"""`fexbench compare`: the regression gate (fexbench.analysis.compare)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from dataclasses import asdict
from typing import Any

from fexbench.analysis.comparisons import NotComparable
from fexbench.analysis.compare import P_NEW_HIGHER, CompareError, compare_sides, markdown, read_side

DESCRIPTION = f"""\
NEW - BASE for every (task, explainer) job that is ok in BASE, on every metric, paired over the
same units and replicates, with the 95% interval, the p-value and P(NEW > BASE).

Exit status: 1 when a headline (first) metric is worse than in BASE with the whole interval beyond
--margin, or when a job that is ok in BASE is missing in NEW, errored (or was skipped) in NEW, or
its NEW file fails its digest or validation check, or a task of BASE is not in NEW at all (each is
named, with a coverage line); 0 otherwise; 2 for unusable input or results scored against different
ground truth (unless --force).

With --explainers A,B the two sides are two explainers, A of BASE and B of NEW: the table says
"A higher", "A lower" or "no significant difference"; exit 1 when B's headline metric is worse
than A's beyond --margin or a task of A has no usable result of B.

{textwrap.fill(P_NEW_HIGHER, 99)}
"""


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
    base = read_side(args.base)
    new = read_side(args.new) if args.new is not None else base
    try:
        out = compare_sides(base, new, args.margin, args.force, explainers, args.metric)
    except NotComparable as exc:
        print(f"fexbench compare: refused: {exc}", file=sys.stderr)
        return 2
    for w in out.warnings:
        print(w, file=sys.stderr)
    if args.json:
        two = bool(out.rows) and all(r.two_explainers for r in out.rows)
        data = {"margin": args.margin, "warnings": out.warnings, "failed": out.failed,
                "coverage": out.coverage.to_dict(), "rows": [asdict(r) for r in out.rows]}
        if two:
            data["explainers"] = sorted({(r.base, r.new) for r in out.rows})[0]
        else:
            data["regression"] = bool(out.beyond_margin)
        print(json.dumps(data, indent=2, allow_nan=True))
    else:
        print(markdown(out.rows, args.margin, out.coverage))
    return 1 if out.failed else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="NEW - BASE per task and metric with paired intervals; exit 1 when "
                                              "a headline metric got worse by more than --margin or a BASE job "
                                              "was not compared",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", metavar="BASE", help="result folder or file of the old version")
    p.add_argument("new", metavar="NEW", nargs="?", help="result folder or file of the new version "
                                                         "(omit with --explainers A,B)")
    p.add_argument("--metric", help="compare only this metric (default: every metric; the first is the headline)")
    p.add_argument("--margin", type=float, default=0.0, metavar="D",
                   help="tolerated loss on the headline metric (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--force", action="store_true", help="compare even when the ground truth differs (warns)")
    p.add_argument("--explainers", metavar="A,B", help="compare explainer A (of BASE) with explainer B (of NEW), "
                                                       "within one folder or across BASE and NEW")
    p.set_defaults(func=cmd_compare)
    return p
