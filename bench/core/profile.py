"""Where a run's time went: wall time accumulated per named stage, stages nested by call.

`with profile.stage("subjects"):` inside `with profile.stage("prepare waterbirds-spurious"):`
accumulates under "prepare waterbirds-spurious/subjects"; a stage entered many times (one subject
after another) adds up, with its count of calls. The timer is always on (two perf_counter calls
per stage: nothing next to training a model); `fexbench run --profile` prints the table. Stages
run in another process are not seen by this one, except the prefetch helper's, which it sends
back at its end (`merge`, shown as "helper / ...").

The code that owns a step names it: the runner (prepare, each explainer's fit and explain,
scoring), shared helpers (data, subject training, activation extraction) and the lazy resources
(each resource's build).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_local = threading.local()
_totals: dict[str, list[float]] = {}  # path -> [seconds, calls], in the order stages were first entered


def _stack() -> list[str]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block under `name`, nested below the stages that are open in this thread."""
    stack = _stack()
    path = "/".join([*stack, name])
    with _lock:
        _totals.setdefault(path, [0.0, 0])
    stack.append(name)
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        stack.pop()
        with _lock:
            entry = _totals[path]
            entry[0] += elapsed
            entry[1] += 1


def reset() -> None:
    """Forget every stage (the start of a run)."""
    with _lock:
        _totals.clear()


def totals() -> dict[str, tuple[float, int]]:
    """path -> (seconds, calls), parents before their children."""
    with _lock:
        return {path: (seconds, int(calls)) for path, (seconds, calls) in _totals.items()}


def merge(prefix: str, other: dict[str, tuple[float, int]]) -> None:
    """Add another process's stages (its `totals()`) under `prefix`: the prefetch helper's work
    shows in the run's table as "helper / ..." (its seconds overlap the run's wall time)."""
    with _lock:
        _totals.setdefault(prefix, [0.0, 1])
        for path, (seconds, calls) in other.items():
            entry = _totals.setdefault(f"{prefix}/{path}", [0.0, 0])
            entry[0] += seconds
            entry[1] += calls
            if "/" not in path:
                _totals[prefix][0] += seconds


def table(wall_s: float | None = None) -> str:
    """The stages as a text table: path, seconds, calls, share of the run's wall time. A parent's
    time includes its children's; a child is listed below its parent."""
    from tabulate import tabulate

    rows = []
    entries = totals()
    first_entered = {path: i for i, path in enumerate(entries)}  # a parent is entered before its children
    parts = {path: path.split("/") for path in entries}
    order = sorted(entries, key=lambda p: [first_entered.get("/".join(parts[p][:i + 1]), 0)
                                           for i in range(len(parts[p]))])
    for path in order:
        seconds, calls = entries[path]
        share = f"{100 * seconds / wall_s:.0f}%" if wall_s else ""
        rows.append((path.replace("/", " / "), f"{seconds:.2f}", calls, share))
    return tabulate(rows, headers=["stage", "seconds", "calls", "of wall"], disable_numparse=True,
                    colalign=("left", "right", "right", "right"))
