"""The `fexbench` command: run the benchmark, list what is registered.

User errors (an unknown task, a bad path) print one clear line and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from bench import registry
from bench.cache import atomic_write_text
from bench.data import DataError
from bench.leaderboard import markdown, tables
from bench.registry import RegistryError
from bench.runner import Environment, run

DEFAULT_TASKS = ("waterbirds-spurious",)


def _names(text: str | None, available: list[str]) -> list[str]:
    return available if not text else [n.strip() for n in text.split(",") if n.strip()]


def cmd_run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    tasks = _names(args.tasks, registry.tasks.names())
    explainers = _names(args.explainers, registry.explainers.names())
    for name in tasks:
        registry.tasks.get(name)  # fail fast, naming the culprit, before any work
    for name in explainers:
        registry.explainers.get(name)
    env = Environment(cache_dir=Path(args.cache_dir), out_dir=Path(args.out), seed=args.seed,
                      progress=not args.quiet)
    results = run(tasks, explainers, env, resume=not args.no_resume)
    for task, table in tables(results).items():
        print(f"\n== {task} ==\n{table}")
    summary = atomic_write_text(env.out_dir / "summary.md", markdown(results))
    print(f"\nresults: {env.out_dir}/<task>/<explainer>.json; summary: {summary}")
    print(f"wall time: {time.perf_counter() - start:.1f}s")
    return 1 if any(r.status != "ok" for r in results) else 0


def cmd_list(args: argparse.Namespace) -> int:
    print("tasks:")
    for name in registry.tasks.names():
        task = registry.tasks.get(name)
        print(f"  {name:24s} {task.description}")
        for m in task.metrics:
            arrow = "higher is better" if m.higher_is_better else "lower is better"
            print(f"    - {m.name:28s} {m.description} ({arrow}; range {m.value_range}; chance {m.chance})")
    print("explainers:")
    for name in registry.explainers.names():
        cls = registry.explainers.get(name)
        print(f"  {name:24s} {cls.description}{' [oracle]' if cls.is_oracle else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fexbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="run explainers on tasks and print the leaderboard (default: everything)")
    p_run.add_argument("--tasks", help="comma-separated task names (default: all registered)")
    p_run.add_argument("--explainers", help="comma-separated explainer names (default: all registered)")
    p_run.add_argument("--out", default="fexbench-results", help="results folder (default: %(default)s)")
    p_run.add_argument("--cache-dir", default=".fexbench-cache", help="cache of worlds, models, features")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--no-resume", action="store_true", help="recompute jobs whose results already exist")
    p_run.add_argument("--quiet", action="store_true", help="no progress bars")
    p_run.set_defaults(func=cmd_run)
    p_list = sub.add_parser("list", help="list tasks (with metrics) and explainers")
    p_list.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (RegistryError, DataError, FileNotFoundError) as exc:
        print(f"fexbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
