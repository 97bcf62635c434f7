"""Paired comparisons and rank groups of the explainers of one task, from result files alone.

Every result keeps the per-unit columns behind each metric (`unit_values`), so the paired
difference of two explainers on the same units and replicates, the probability of improvement and
Holm-corrected rank groups (fexbench.core.stats) can be recomputed by the leaderboard, by
`fexbench compare` and by the published site, long after the run. Two results are comparable only
when they were scored against the same ground truth: the same task version and the same data and
weights hashes; otherwise the comparison is refused, naming what differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from fexbench.core import stats
from fexbench.core.results import JobResult
from fexbench.harness.pooling import replicated_from_result


class NotComparable(ValueError):
    """Two results were scored against different ground truth (or lack unit values)."""


def ground_truth_identity(result: JobResult) -> dict[str, str]:
    """What a result's ground truth is: the task's version and the data and weights hashes of
    every replicate (resource hashes are the explainer's own business and are left out)."""
    out = {"task_version": str(result.config.get("code_versions", {}).get("task", "?"))}
    replicates = result.replicates or ({"index": 0, "hashes": result.hashes},)
    for rep in replicates:
        for k, v in (rep.get("hashes") or {}).items():
            if not str(k).startswith("resource:"):
                out[f"r{rep.get('index', 0)}:{k}"] = str(v)
    return out


def differing_ground_truth(a: JobResult, b: JobResult) -> list[str]:
    ia, ib = ground_truth_identity(a), ground_truth_identity(b)
    return [f"{k}: {ia.get(k, 'missing')} vs {ib.get(k, 'missing')}" for k in sorted(set(ia) | set(ib))
            if ia.get(k) != ib.get(k)]


def replicated(result: JobResult, metric: str) -> stats.Replicated:
    if metric not in (result.unit_values or {}):
        raise NotComparable(f"{result.task}/{result.explainer}: the result keeps no unit values for {metric!r} "
                            "(written by an older fexbench, or the task returns no estimates); re-run it")
    return replicated_from_result(result.unit_values, metric)


def compare_results(a: JobResult, b: JobResult, metric: str, force: bool = False,
                    n_resamples: int = 2000) -> stats.Comparison:
    """a - b on `metric`, paired over the same units and replicates."""
    diff = differing_ground_truth(a, b)
    if diff and not force:
        raise NotComparable(f"{a.task}: {a.explainer} and {b.explainer} were scored against different ground "
                            f"truth: " + "; ".join(diff[:6]) + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""))
    return stats.compare(replicated(a, metric), replicated(b, metric), n_resamples=n_resamples, seed=a.seed)


@dataclass(frozen=True)
class TaskRanking:
    task: str
    metric: str
    higher_is_better: bool
    ranks: Mapping[str, int]  # explainer -> rank group (1 = best; ties share a rank)
    significant: frozenset  # (better, worse) pairs after Holm
    comparisons: Mapping[tuple[str, str], stats.Comparison]
    excluded: Mapping[str, str]  # explainer -> why it could not be ranked


@dataclass(frozen=True)
class TaskValues:
    """What a task's ranking is computed from: every rankable explainer's Replicated on one metric."""
    task: str
    metric: str
    higher_is_better: bool
    values: Mapping[str, stats.Replicated]  # explainer -> its replicated values on `metric`
    excluded: Mapping[str, str]  # explainer -> why it could not be ranked
    seed: int  # the run seed (the bootstrap's seed)


def task_values(results: Iterable[JobResult], metric: str | None = None) -> TaskValues | None:
    """The replicated values of one task's ok results on `metric` (default: the task's headline,
    its first metric). Results without unit values, with an undefined value, or scored against
    other ground truth than the majority are excluded with the reason."""
    rows = [r for r in results if r.status == "ok" and r.metrics]
    if not rows:
        return None
    metric = metric or rows[0].metrics[0].name
    head = next((m for r in rows for m in r.metrics if m.name == metric), None)
    if head is None:
        return None
    excluded: dict[str, str] = {}
    identities: dict[str, list[JobResult]] = {}
    for r in rows:
        identities.setdefault(repr(sorted(ground_truth_identity(r).items())), []).append(r)
    main = max(identities.values(), key=len)
    values: dict[str, stats.Replicated] = {}
    for r in rows:
        if r not in main:
            excluded[r.explainer] = "scored against other ground truth: " + "; ".join(differing_ground_truth(main[0], r)[:3])
            continue
        try:
            rep = replicated(r, metric)
        except NotComparable as exc:
            excluded[r.explainer] = str(exc)
            continue
        if not math.isfinite(rep.value):
            excluded[r.explainer] = f"{metric} is undefined"
            continue
        values[r.explainer] = rep
    return TaskValues(rows[0].task, metric, head.higher_is_better, values, excluded, rows[0].seed)


def rank_task(results: Iterable[JobResult], metric: str | None = None, alpha: float = 0.05,
              n_resamples: int = 2000) -> TaskRanking | None:
    """Rank groups of one task's ok results on `metric` (default: the task's headline, its first
    metric), from `task_values`."""
    found = task_values(results, metric)
    if found is None:
        return None
    if not found.values:
        return TaskRanking(found.task, found.metric, found.higher_is_better, {}, frozenset(), {}, found.excluded)
    ranking = stats.rank_groups(found.values, higher_is_better=found.higher_is_better, alpha=alpha,
                                n_resamples=n_resamples, seed=found.seed)
    return TaskRanking(found.task, found.metric, found.higher_is_better, ranking.ranks, ranking.significant,
                       ranking.comparisons, found.excluded)


def rank_all(results: Sequence[JobResult], alpha: float = 0.05) -> dict[str, TaskRanking]:
    """task -> its ranking on the headline metric."""
    by_task: dict[str, list[JobResult]] = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    out = {}
    for task, rows in by_task.items():
        ranking = rank_task(rows, alpha=alpha)
        if ranking is not None:
            out[task] = ranking
    return out
