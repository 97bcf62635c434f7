"""`fexbench release`: make a release of a run (its subjects' weights and shared resources, with
hashes), or verify one; `fexbench run --release` scores explainers on it (docs/release.md)."""
from __future__ import annotations

import argparse

from fexbench.cli.common import examples, log


def cmd_release(args: argparse.Namespace) -> int:
    from fexbench.harness import release

    if args.release_command == "create":
        out = release.create(args.run, args.out, archive=args.archive, name=args.name, cache_dir=args.cache_dir,
                             log=log)
        with release.open_release(out) as opened:
            print(release.describe(opened))
        print(f"release: {out}" + (f" and {out.with_name(out.name + '.tar')}" if args.archive else ""))
        return 0
    with release.open_release(args.source) as opened:
        release.check_compatible(opened.manifest)
        print(release.describe(opened))
        print("compatible with this fexbench and its task versions")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "release", help="make or verify a release: the weights and resources a board rests on (docs/release.md)",
        description="Then `fexbench run --release DIR_OR_ARCHIVE_OR_URL` scores explainers on a release, training "
                    "nothing (docs/release.md).")
    inner = p.add_subparsers(dest="release_command", required=True)
    # the examples sit on the subcommands: they need a finished run (tests/test_release.py runs them)
    c = inner.add_parser("create", help="a release of a finished run, from its folder and the cache it used",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=examples("fexbench release create fexbench-results --out board-release --archive",
                                         "fexbench run --release board-release.tar --explainers my-explainer"))
    c.add_argument("run", help="the run's results folder (holds run-config.json, which names its cache)")
    c.add_argument("--out", required=True, help="the new release folder")
    c.add_argument("--archive", action="store_true", help="also write OUT.tar, one file to host")
    c.add_argument("--name", help="the release's name (default: the run folder's name)")
    c.add_argument("--cache-dir", help="the cache the run used (default: run-config.json's cache_dir)")
    v = inner.add_parser("verify", help="check a release: every file's sha256 and size, and its versions",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=examples("fexbench release verify board-release.tar",
                                         "fexbench release verify https://example.org/board-release.tar"))
    v.add_argument("source", help="a release folder, a .tar/.zip archive or an http(s) URL")
    p.set_defaults(func=cmd_release)
