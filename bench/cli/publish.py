"""`fexbench publish`: the command line of the site builder. Bad input is one line, exit 2."""
from __future__ import annotations

import argparse
import sys
import time

from fexbench.report.merge import PublishError


def cmd_publish(args: argparse.Namespace) -> int:
    from fexbench.report.site import publish

    start = time.perf_counter()
    try:
        done = publish(args.runs, args.out, prefer=args.prefer, separate=args.separate, title=args.title)
    except PublishError as exc:
        print(f"fexbench publish: {exc}", file=sys.stderr)
        return 2
    for warning in done.warnings:
        print(f"publish: {warning}", file=sys.stderr)
    print(f"site: {done.out}/index.html ({done.boards} board{'s' if done.boards != 1 else ''}, {done.files} files) "
          f"in {time.perf_counter() - start:.1f}s")
    if args.screenshot:
        from fexbench.report.browser import NoBrowser, screenshot

        try:
            print(f"screenshot: {screenshot(done.out / 'index.html', args.screenshot)}")
        except NoBrowser as exc:
            print(f"fexbench publish: cannot take the screenshot: {exc}", file=sys.stderr)
            return 2
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("publish", help="build a static leaderboard website from run folders "
                                              "(opens from disk, offline)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (<task>/<explainer>.json); the first "
                   "fixes the ground truth others must share")
    p.add_argument("--out", required=True, metavar="SITE_DIR", help="the site folder (replaced if it is a site)")
    p.add_argument("--prefer", metavar="RUN_DIR", help="when two runs hold the same (task, explainer), this run wins")
    p.add_argument("--separate", action="store_true", help="publish a run scored against other ground truth as a "
                   "board of its own (default: refuse it)")
    p.add_argument("--title", default="fexbench leaderboard")
    p.add_argument("--screenshot", metavar="PNG", help="also write a screenshot of the overview (headless Chromium)")
    p.set_defaults(func=cmd_publish)
