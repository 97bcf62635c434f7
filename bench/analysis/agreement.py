"""`fexbench agreement RUN RUN [RUN ...]`: do independent runs of one design tell the same story?

The replication check of a leaderboard, as a command. Given two or more result folders of the
same design run with different seeds (new worlds, zoos and explainer seeds each), it reports per
task, on the headline metric:

- the rank groups of every run, and for every pair of runs whether they are identical or differ
  only by one method moving to a neighbouring group (`stability.rankings_agree`);
- significant differences that reverse between runs (a > b in one, b > a in another);
- cross-run interval coverage: how often one run's value lies inside another run's 95% interval;
- with the runs' replicates pooled (R per run, k runs), the agreement of every pair of disjoint
  sets of R replicates, ranked with the board's rule: the same check over many more re-runs than
  the k given, which is what `fexbench power`'s projection is checked against.

Exit status 1 when a pair of runs differs by more than one move on some task, or when the
coverage is below `--min-coverage` (default 0.90): the criterion the replication issue set.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tabulate import tabulate

from fexbench.analysis import stability
from fexbench.core.errors import UsageError
from fexbench.core.results import JobResult, no_results_message, read_results_dir
from fexbench.analysis.comparisons import ground_truth_identity, rank_task, role, task_values

MAX_SPLITS = 2000  # pairs of disjoint replicate sets ranked per task (all of them when fewer)


@dataclass
class TaskAgreement:
    """What the runs say about one task's headline metric (the methods every run scored)."""
    task: str
    metric: str
    methods: list[str]
    ranks: list[dict[str, int]]  # per run
    pairs: list[dict[str, Any]] = field(default_factory=list)  # per pair of runs: same, near
    reversals: list[str] = field(default_factory=list)
    covered: int = 0
    cells: int = 0
    misses: list[str] = field(default_factory=list)
    splits: dict[str, Any] | None = None


def _by_task(results: Sequence[JobResult]) -> dict[str, list[JobResult]]:
    out: dict[str, list[JobResult]] = {}
    for r in results:
        out.setdefault(r.task, []).append(r)
    return out


def _splits(values_per_run: list[dict[str, Any]], methods: list[str], higher_is_better: bool,
            seed: int) -> dict[str, Any] | None:
    """Agreement of pairs of disjoint sets of R pooled replicates (R = the runs' common count)."""
    counts = {len(v[methods[0]].replicate_values()) for v in values_per_run}
    if len(counts) != 1:
        return None
    r = counts.pop()
    pooled = np.concatenate([np.stack([v[m].replicate_values() for m in methods], axis=1) for v in values_per_run])
    n = pooled.shape[0]
    if r < 2 or n < 2 * r or not np.all(np.isfinite(pooled)):
        return None
    if math.comb(n, r) * math.comb(n - r, r) // 2 <= MAX_SPLITS:  # every pair of disjoint sets
        pairs = [(a, b) for a in itertools.combinations(range(n), r)
                 for b in itertools.combinations([i for i in range(n) if i not in a], r) if a < b]
    else:  # too many to enumerate: random pairs of disjoint sets
        rng = np.random.default_rng(seed)
        draws = [rng.permutation(n)[:2 * r] for _ in range(MAX_SPLITS)]
        pairs = [(tuple(sorted(d[:r].tolist())), tuple(sorted(d[r:].tolist()))) for d in draws]
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def ranks(rows: tuple[int, ...]) -> np.ndarray:
        if rows not in memo:
            memo[rows] = stability.ranks_from_values(pooled[list(rows)], methods, higher_is_better)
        return memo[rows]

    agree = np.array([stability.rankings_agree(ranks(a), ranks(b)) for a, b in pairs])
    return {"replicates_per_set": r, "pooled_replicates": n, "pairs_of_sets": len(pairs),
            "same": float(agree[:, 0].mean()), "near": float(agree[:, 1].mean())}


def check(folders: Sequence[str | Path], seed: int = 0) -> list[TaskAgreement]:
    """Per task shared by all runs: the runs' rank groups, their agreement, reversals, cross-run
    coverage and the agreement of disjoint sets of pooled replicates. UsageError for a folder
    without results, runs that share no task, or two runs with the same ground truth."""
    runs = []
    for folder in folders:
        results, _ = read_results_dir(folder)
        if not results:
            raise UsageError(no_results_message(folder, f"{folder}: no readable results"))
        runs.append(_by_task(results))
    tasks = sorted(set.intersection(*(set(r) for r in runs)))
    if not tasks:
        raise UsageError("the runs share no task")
    out = []
    for task in tasks:
        identities = [{repr(sorted(ground_truth_identity(r).items())) for r in run[task]} for run in runs]
        for i, j in itertools.combinations(range(len(runs)), 2):
            if identities[i] & identities[j]:
                raise UsageError(f"{task}: runs {i + 1} ({folders[i]}) and {j + 1} ({folders[j]}) share ground truth "
                                 "(the same data and weights): agreement needs independent runs, e.g. other --seed")
        values = [task_values(run[task]) for run in runs]
        if any(v is None for v in values):
            continue
        metric = values[0].metric
        methods = sorted(m for m in set.intersection(*(set(v.values) for v in values)) if role(m) == "method")
        if len(methods) < 2:
            continue
        rankings = [rank_task([r for r in run[task] if r.explainer in methods], metric) for run in runs]
        agreement = TaskAgreement(task, metric, methods, [dict(rk.ranks) for rk in rankings])
        for i, j in itertools.combinations(range(len(runs)), 2):
            same, near = stability.rankings_agree([rankings[i].ranks[m] for m in methods],
                                                  [rankings[j].ranks[m] for m in methods])
            agreement.pairs.append({"runs": [i, j], "same": same, "near": near})
            for better, worse in rankings[i].significant:
                if (worse, better) in rankings[j].significant:
                    agreement.reversals.append(f"{better} > {worse} in run {i + 1}, the reverse in run {j + 1}")
        heads = [{r.explainer: r.metric(metric) for r in run[task] if r.explainer in methods and r.status == "ok"}
                 for run in runs]
        for i, j in itertools.permutations(range(len(runs)), 2):
            for m in methods:
                a, b = heads[i].get(m), heads[j].get(m)
                if a is None or b is None or not all(map(math.isfinite, (a.value, b.ci_low, b.ci_high))):
                    continue
                agreement.cells += 1
                if b.ci_low - 1e-12 <= a.value <= b.ci_high + 1e-12:
                    agreement.covered += 1
                else:
                    agreement.misses.append(f"{m}: run {i + 1}'s {a.value:.3f} outside run {j + 1}'s "
                                            f"[{b.ci_low:.3f}, {b.ci_high:.3f}]")
        agreement.splits = _splits([v.values for v in values], methods, values[0].higher_is_better, seed)
        out.append(agreement)
    return out


def report(folders: Sequence[str | Path], min_coverage: float = 0.9) -> tuple[str, dict[str, Any], bool]:
    """The printed report, the same figures as a dict, and whether the runs replicate (every pair
    of runs within one move on every task, and coverage at least `min_coverage`)."""
    found = check(folders)
    lines: list[str] = ["runs: " + ", ".join(f"{k + 1} = {f}" for k, f in enumerate(folders)), ""]
    covered, cells = 0, 0
    summary: dict[str, Any] = {"runs": [str(f) for f in folders], "tasks": {}}
    for a in found:
        table = [[m, *[str(rk[m]) for rk in a.ranks]] for m in a.methods]
        lines.append(f"== {a.task}: {a.metric} ==")
        lines.append(tabulate(table, headers=["explainer", *[f"rank, run {k + 1}" for k in range(len(a.ranks))]],
                              tablefmt="simple", disable_numparse=True))
        verdicts = [f"runs {p['runs'][0] + 1}-{p['runs'][1] + 1}: "
                    + ("identical" if p["same"] else "within one move" if p["near"] else "differ by more than one move")
                    for p in a.pairs]
        lines.append("rank groups: " + "; ".join(verdicts))
        lines.append("significant differences reversed: " + ("; ".join(a.reversals) if a.reversals else "none"))
        if a.cells:
            lines.append(f"a run's value inside another run's 95% interval: {a.covered}/{a.cells}"
                         + (" (misses: " + "; ".join(a.misses) + ")" if a.misses else ""))
        if a.splits:
            s = a.splits
            lines.append(f"pooled: {s['pooled_replicates']} replicates, {s['pairs_of_sets']} pairs of disjoint sets of "
                         f"{s['replicates_per_set']}: identical {s['same']:.2f}, within one move {s['near']:.2f}")
        lines.append("")
        covered, cells = covered + a.covered, cells + a.cells
        summary["tasks"][a.task] = {"metric": a.metric, "ranks": a.ranks, "pairs": a.pairs,
                                    "reversals": a.reversals, "covered": a.covered, "cells": a.cells,
                                    "misses": a.misses, "splits": a.splits}
    coverage = covered / cells if cells else math.nan
    groups_agree = all(p["near"] for a in found for p in a.pairs)
    ok = groups_agree and cells > 0 and coverage >= min_coverage
    groups = "agree within one move on every task" if groups_agree else "differ by more than one move on some task"
    verdict = "the runs replicate" if ok else "the runs do not replicate by this criterion"
    lines.append(f"overall: rank groups {groups}; coverage {covered}/{cells} = {coverage:.1%} "
                 f"(required {min_coverage:.0%}); {verdict}")
    summary.update({"covered": covered, "cells": cells, "coverage": coverage, "replicates": ok})
    return "\n".join(lines), summary, ok
