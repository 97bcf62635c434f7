"""fexbench: a benchmark of methods that explain the learned features of image classifiers in words.

The `fexbench` command: one module per command in this package (run, ls, explain, perf,
plan, power, agreement, compare, reproduce, verify, publish, release, schema, check_explainer), each
with its `add_parser`; this module only assembles them and turns user errors into one line and exit 2.

User errors (an unknown task, a bad path) print one clear line and exit 2, without a traceback.
The modules that compute (the runner, tasks, torch) are imported inside the commands that use
them: `fexbench --help` and `fexbench list` answer without loading torch (tests/test_cli.py).
"""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Sequence

from fexbench.cli import (agreement, check_explainer, compare, explain, ls, perf, plan, power, publish, release,
                          reproduce, run, schema, verify)
from fexbench.cli.common import examples
from fexbench.core.errors import UsageError
from fexbench.core.registry import RegistryError

# the order of `fexbench --help`
COMMANDS = (run, ls, explain, check_explainer, compare, power, agreement, reproduce, verify, publish, release, schema,
            plan, perf)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fexbench", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("fexbench list",
                        "fexbench run --tasks waterbirds-spurious --explainers random,class-name,oracle --profile"))
    sub = parser.add_subparsers(dest="command")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # finished jobs are already written (each job's result file is written when it ends)
        print("fexbench: interrupted; finished results are kept (run again to resume)", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _FULL_DISK and not isinstance(exc, _user_errors()):
            raise
        if exc.errno in _FULL_DISK:  # results are written atomically: what was finished is whole
            where = f" writing {exc.filename}" if exc.filename else ""
            print(f"fexbench: error: no space left on the device{where} ({exc.strerror}); free space or choose "
                  f"another --out / --cache-dir; finished results are kept (run again to resume)", file=sys.stderr)
            return 2
        print(f"fexbench: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"fexbench: error: {exc}", file=sys.stderr)
        return 2


_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: one line, exit 2. Imported here, on an error only."""
    from fexbench.core.threads import ThreadsError
    from fexbench.data.imageset import DataError
    from fexbench.harness.config import ConfigError

    return RegistryError, DataError, FileNotFoundError, ConfigError, UsageError, ThreadsError


if __name__ == "__main__":
    sys.exit(main())
