"""Paired comparisons and the board's conclusions for the explainers of one task, from result
files alone, with every role, direction and headline taken from the registered code.

The families of comparisons are fixed in advance (docs/statistics.md#families), per task, on the
headline metric:
1. the compared methods (neither oracle nor control) among themselves: every pair, two-sided,
   Holm within this family; a method's rank interval among the M compared methods is
   [1 + methods significantly better, M - methods significantly worse];
2. each compared method against each control: one-sided "beats the control", Holm within this
   family;
3. the oracle's gap to every other explainer: its paired interval, Holm within this family for
   "significant"; the oracle and the controls get no rank among methods.

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

from fexbench.core import registry, stats
from fexbench.core.card import kind_of
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


ROLES = ("method", "control", "oracle")


def role(explainer: str) -> str:
    """An explainer's role from its registered class (`is_oracle`, `control`), never from a result
    file; an explainer not installed here is a compared method, the role with no privilege."""
    try:
        cls = registry.explainers.get(explainer)
    except registry.RegistryError:
        return "method"
    return kind_of(cls)  # the rule method cards follow too (fexbench.core.card)


def headline(task: str) -> tuple[str, bool, tuple[float, float]]:
    """A task's headline metric (its first), its direction and range, from the registered task:
    NotComparable naming the task when it is not installed here."""
    try:
        metrics = registry.tasks.get(task).metrics
    except registry.RegistryError as exc:
        raise NotComparable(f"task {task!r} is not registered here, so its headline metric and direction are "
                            f"unknown ({exc})") from None
    first = metrics[0]
    return first.name, bool(first.higher_is_better), tuple(first.value_range)


@dataclass(frozen=True)
class TaskRanking:
    """The board's conclusions on one task's headline metric (the module docstring's families)."""
    task: str
    metric: str
    higher_is_better: bool
    roles: Mapping[str, str]  # explainer -> "method" | "control" | "oracle" (from code)
    rank_intervals: Mapping[str, tuple[int, int]]  # compared method -> [best, worst] rank among methods
    significant: frozenset  # (better, worse) pairs of compared methods significant after Holm (family 1)
    beats: Mapping[str, Mapping[str, bool]]  # method -> control -> beats it (family 2, one-sided, Holm)
    oracle_gaps: Mapping[str, "OracleGap"]  # explainer -> the oracle's gap to it (family 3)
    comparisons: Mapping[tuple[str, str], stats.Comparison]  # every pair computed, keyed as compared
    excluded: Mapping[str, str]  # explainer -> why it could not be ranked

    @property
    def ranks(self) -> Mapping[str, int]:
        """The best rank of each compared method (1 + methods significantly better)."""
        return {e: lo for e, (lo, _) in self.rank_intervals.items()}

    def rank_label(self, explainer: str) -> str:
        """"[1, 3]" for a compared method ("1" when it is pinned), "control" or "oracle" otherwise."""
        if explainer in self.rank_intervals:
            lo, hi = self.rank_intervals[explainer]
            return f"{lo}" if lo == hi else f"[{lo}, {hi}]"
        return self.roles.get(explainer, "")


@dataclass(frozen=True)
class OracleGap:
    oracle: str
    difference: float  # oracle - explainer, in the metric's better direction (positive: the oracle is better)
    low: float
    high: float
    significant: bool  # Holm within family 3


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
    """The replicated values of one task's ok results on `metric` (default: the registered task's
    headline). Results without unit values, with an undefined value, or scored against other ground
    truth than the majority are excluded with the reason. The direction comes from the registered
    task, never from the files."""
    rows = [r for r in results if r.status == "ok" and r.metrics]
    if not rows:
        return None
    first_metric, higher_is_better, _ = headline(rows[0].task)
    metric = metric or first_metric
    if metric != first_metric:
        try:
            found = next(m for m in registry.tasks.get(rows[0].task).metrics if m.name == metric)
        except StopIteration:
            return None
        higher_is_better = bool(found.higher_is_better)
    if not any(m.name == metric for r in rows for m in r.metrics):
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
    return TaskValues(rows[0].task, metric, higher_is_better, values, excluded, rows[0].seed)


def _one_sided(comp: stats.Comparison, better_is_positive: bool) -> float:
    """One-sided p of "a is better than b" from a two-sided comparison of a - b."""
    p = comp.p_value
    if not math.isfinite(p):
        return math.nan
    right_way = (comp.difference > 0) == better_is_positive and comp.difference != 0
    return p / 2 if right_way else 1 - p / 2


def rank_task(results: Iterable[JobResult], metric: str | None = None, alpha: float = 0.05,
              n_resamples: int = 2000) -> TaskRanking | None:
    """The board's conclusions on one task (the families of the module docstring), from `task_values`."""
    found = task_values(results, metric)
    if found is None:
        return None
    roles = {name: role(name) for name in found.values}
    hib = found.higher_is_better
    names = sorted(found.values)
    comps: dict[tuple[str, str], stats.Comparison] = {}

    def compared(a: str, b: str) -> stats.Comparison:
        if (a, b) not in comps:
            comps[(a, b)] = stats.compare(found.values[a], found.values[b], n_resamples=n_resamples, seed=found.seed)
        return comps[(a, b)]

    methods = [n for n in names if roles[n] == "method"]
    controls = [n for n in names if roles[n] == "control"]
    oracles = [n for n in names if roles[n] == "oracle"]
    # family 1: compared methods among themselves
    pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    family1 = [compared(a, b) for a, b in pairs]
    intervals, significant = stats.rank_intervals(methods, pairs, [c.difference for c in family1],
                                                  [c.p_value for c in family1], hib, alpha)
    # family 2: each method against each control, one-sided
    pairs2 = [(m, c) for m in methods for c in controls]
    adjusted2 = stats.holm([_one_sided(compared(m, c), hib) for m, c in pairs2])
    beats: dict[str, dict[str, bool]] = {m: {} for m in methods}
    for (m, c), p in zip(pairs2, adjusted2):
        beats[m][c] = bool(math.isfinite(p) and p <= alpha)
    # family 3: the oracle's gap to every other explainer
    gaps: dict[str, OracleGap] = {}
    if oracles:
        oracle = oracles[0]
        others = [n for n in names if n != oracle]
        adjusted3 = stats.holm([compared(oracle, n).p_value for n in others])
        for n, p in zip(others, adjusted3):
            c = compared(oracle, n)
            sign = 1.0 if hib else -1.0
            low, high = sorted((sign * c.low, sign * c.high))
            gaps[n] = OracleGap(oracle, sign * c.difference, low, high,
                                bool(math.isfinite(p) and p <= alpha and c.difference != 0))
    return TaskRanking(found.task, found.metric, hib, roles, intervals, significant, beats, gaps, comps,
                       found.excluded)


def rank_all(results: Sequence[JobResult], alpha: float = 0.05) -> dict[str, TaskRanking]:
    """task -> its ranking on the headline metric."""
    by_task: dict[str, list[JobResult]] = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    out = {}
    for task, rows in by_task.items():
        try:
            ranking = rank_task(rows, alpha=alpha)
        except NotComparable:  # a task not installed here: its direction is unknown, so nothing is ranked
            continue
        if ranking is not None:
            out[task] = ranking
    return out
