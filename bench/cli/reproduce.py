"""`fexbench reproduce`: re-run a results folder's configuration and compare (fexbench.analysis.reproduce)."""
from __future__ import annotations

import argparse
from typing import Any

from fexbench.analysis.reproduce import reproduce


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="re-run a results folder's configuration and compare every metric "
                                         "and rank group with it")
    p.add_argument("folder", help="a results folder written by `fexbench run` (has run-config.json)")
    p.add_argument("--out", help="where the new results go (default: a new temporary folder)")
    p.add_argument("--cache-dir", help="cache to use (default: the folder's recorded cache_dir)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest accepted |difference| (default 1e-6)")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    import sys

    ok, text = reproduce(args.folder, args.out, args.cache_dir, args.tolerance,
                         log=lambda s: print(s, file=sys.stderr))
    print(text)
    return 0 if ok else 1

