"""`fexbench schema` and `fexbench validate`: the result files' JSON Schema, and folders checked against it (fexbench.core.schema)."""
from __future__ import annotations

import argparse
from pathlib import Path

from fexbench.core.results import schema_text, validate_dir, write_schema
from fexbench.core.schema import SCHEMA_FILE, SCHEMA_VERSION


def cmd_schema(args: argparse.Namespace) -> int:
    if args.write:
        print(f"wrote {write_schema()}")
    else:
        print(schema_text(), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    total = 0
    for folder in args.dirs:
        if not Path(folder).is_dir():
            print(f"fexbench validate: {folder}: not a folder")
            return 2
        n, found = validate_dir(folder)
        found += board_problems(Path(folder))
        total += n
        for line in found:
            print(line)
        bad += len({line.split(": ", 1)[0] for line in found})
    if total == 0:
        print("fexbench validate: no result files (*.json) found")
        return 1
    print(f"{total} result file(s) checked against schema {SCHEMA_VERSION}: "
          + ("all valid" if not bad else f"{bad} invalid"))
    return 1 if bad else 0


def add_parser(subparsers) -> None:
    """Register `fexbench schema` and `fexbench validate`."""
    p = subparsers.add_parser("schema", help="print the JSON Schema of a result file")
    p.add_argument("--write", action="store_true", help=f"regenerate the shipped {SCHEMA_FILE.name} instead")
    p.set_defaults(func=cmd_schema)
    p = subparsers.add_parser("validate", help="check every result file in folders against the schema "
                                               "(types and ranges); exit 1 if any is invalid")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.set_defaults(func=cmd_validate)


def board_problems(folder: Path) -> list[str]:
    """A folder's board.json, if it has one: its shape, and that it is what the folder's result
    files give (recomputed here: nothing on a board is taken on trust)."""
    import json

    from fexbench.analysis.board import BOARD_FILE, board, problems
    from fexbench.core.results import read_results_dir

    path = folder / BOARD_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{path}: not readable JSON: {str(exc)[:120]}"]
    found = problems(data, str(path))
    if not found:
        results, _ = read_results_dir(folder)
        expected = json.loads(json.dumps(board(results), allow_nan=False))
        if data != expected:
            diff = sorted(t for t in set(expected["tasks"]) | set(data["tasks"])
                          if expected["tasks"].get(t) != data["tasks"].get(t))
            found.append(f"{path}: differs from the board its result files give (tasks: {', '.join(diff) or 'top level'})")
    return found
