"""Merging run folders into boards: one board per ground truth.

A published board and an author's submission may only share a table when their numbers were
measured against the same thing: the same task version and the same data and weights hashes
(fexbench.analysis.comparisons.ground_truth_identity). A run that disagrees is refused, naming the
differing hashes, or (asked for) published as a board of its own. One (task, explainer) found in
two runs is an error naming both files, unless the caller says which run wins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fexbench.core.results import JobResult, ResultsError, no_results_message, read_result
from fexbench.analysis.comparisons import differing_ground_truth, ground_truth_identity


class PublishError(ValueError):
    """Input the site cannot be built from; its message is one line naming the file or run."""


@dataclass(frozen=True)
class Entry:
    result: JobResult
    path: Path  # the result file it was read from
    run: Path  # the run folder it belongs to


@dataclass
class Board:
    runs: list[Path] = field(default_factory=list)
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    reference: dict[str, Entry] = field(default_factory=dict)  # task -> an ok entry fixing its ground truth

    @property
    def results(self) -> list[JobResult]:
        return [e.result for _, e in sorted(self.entries.items())]


def load_run(run_dir: str | Path) -> tuple[list[Entry], list[str]]:
    """Every result file of one run folder (<task>/<explainer>.json), read and checked; a file that
    fails its checks refuses the whole run (a submission is published whole or not at all).
    Returns the entries and warnings (files without a digest, read unverified)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise PublishError(f"{run}: not a run folder")
    entries, warnings = [], []
    for path in sorted(run.glob("*/*.json")):
        try:
            result = read_result(path)
        except ResultsError as exc:
            raise PublishError(f"refusing {run}: {exc}") from None
        if result.digest is None:
            warnings.append(f"{path}: no recorded digest (written by an older fexbench); published unverified")
        entries.append(Entry(result, path, run))
    if not entries:
        raise PublishError(no_results_message(run, f"{run}: no result files (<task>/<explainer>.json) found"))
    return entries, warnings


def _references(entries: Sequence[Entry]) -> dict[str, Entry]:
    """task -> the entry whose ground truth stands for the run's (the first ok result)."""
    out: dict[str, Entry] = {}
    for e in entries:
        if e.result.status == "ok" and e.result.task not in out:
            out[e.result.task] = e
    return out


def _conflicts(board: Board, refs: dict[str, Entry]) -> list[str]:
    out = []
    for task, entry in refs.items():
        mine = board.reference.get(task)
        if mine is None:
            continue
        if ground_truth_identity(mine.result) != ground_truth_identity(entry.result):
            diff = differing_ground_truth(mine.result, entry.result)
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            out.append(f"{task}: " + "; ".join(diff[:3]) + more)
    return out


def merge(run_dirs: Sequence[str | Path], prefer: str | Path | None = None,
          separate: bool = False) -> tuple[list[Board], list[str]]:
    """The boards to publish (the first holds the first run) and warnings.

    Runs join the first board whose ground truth agrees on every task they share; a run that
    agrees with none is refused (PublishError) unless `separate`, which opens a new board."""
    if not run_dirs:
        raise PublishError("no run folders given")
    runs = [Path(r) for r in run_dirs]
    if len({r.resolve() for r in runs}) != len(runs):
        raise PublishError("a run folder is given twice")
    preferred = Path(prefer).resolve() if prefer is not None else None
    if preferred is not None and preferred not in {r.resolve() for r in runs}:
        raise PublishError(f"--prefer {prefer}: not one of the run folders given")
    boards: list[Board] = []
    warnings: list[str] = []
    for run in runs:
        entries, found = load_run(run)
        warnings += found
        refs = _references(entries)
        board = next((b for b in boards if not _conflicts(b, refs)), None)
        if board is None and boards and not separate:
            first = boards[0]
            raise PublishError(f"refusing {run}: its ground truth differs from {', '.join(map(str, first.runs))} "
                               f"(task version or data/weights hashes): {' | '.join(_conflicts(first, refs))}; "
                               "pass --separate to publish it as a board of its own")
        if board is None:
            board = Board()
            boards.append(board)
        board.runs.append(run)
        for task, entry in refs.items():
            board.reference.setdefault(task, entry)
        for entry in entries:
            key = (entry.result.task, entry.result.explainer)
            old = board.entries.get(key)
            if old is not None:
                if preferred is None or preferred not in (old.run.resolve(), entry.run.resolve()):
                    raise PublishError(f"{key[0]}/{key[1]} is in two runs: {old.path} and {entry.path}; "
                                       "pass --prefer RUN_DIR to say which wins")
                if entry.run.resolve() != preferred:
                    continue
            board.entries[key] = entry
    return boards, warnings
