"""What every command module shares: where progress lines go and how help texts show examples."""
from __future__ import annotations

import sys


def log(line: str) -> None:
    """Progress and status lines go to stderr; stdout carries only results and tables."""
    print(line, file=sys.stderr, flush=True)


def examples(*lines: str) -> str:
    """A help text's examples block; tests/test_cli.py runs every line of it (with a tiny config)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)
