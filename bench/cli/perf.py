"""`fexbench perf`: the performance benchmarks of fexbench's own code (entry-point group fexbench.perf)."""
from __future__ import annotations

import argparse

from fexbench.core import registry


def cmd_perf(args: argparse.Namespace) -> int:
    """Run a registered performance benchmark (entry point group fexbench.perf); it prints its figures."""
    if not args.name:
        print("performance benchmarks: " + (", ".join(registry.perf.names()) or "none registered"))
        return 0
    return int(registry.perf.get(args.name)(args.args) or 0)


def add_parser(sub) -> None:
    p_perf = sub.add_parser("perf", help="performance benchmarks of fexbench's own code (speed, memory); "
                                         "each prints its figures")
    p_perf.add_argument("name", nargs="?", help="benchmark name (omit to list them)")
    p_perf.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    p_perf.set_defaults(func=cmd_perf)
