"""Pooling one explainer's scores over explainer seeds and replicates into metric values.

A job scores an explainer on R replicates of a task (each its own world data and zoo), each over
S explainer seeds. A metric's value is the mean over replicates of the mean over seeds of the
task's statistic over that replicate's units. Its interval must state the uncertainty of the
benchmark, not of one zoo: with one replicate it is the task's own interval over units (as
before), with several it is the replicated interval of `fexbench.core.stats`, which resamples
replicates and the units inside them.

The per-unit columns behind every metric are kept in the result (`unit_values`), with the
statistic named by its path 'module:function' in the registry of statistics
(fexbench.core.schema.register_statistic; a file's name is looked up there, never imported), so that paired comparisons, rank groups and `fexbench compare`
can be recomputed from result files alone, long after the run. When a task's Estimates carry
cluster ids (`Estimate.clusters`: the subject model of each unit), they are kept beside the
columns, one list per replicate, so the recomputed statistics resample clusters as the task did.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fexbench.core.contract import Scored
from fexbench.core.metrics import Estimate, MetricValue, nanmean, pool_seeds
from fexbench.core.schema import resolve_statistic, statistic_name


def statistic_path(statistic: Callable[..., Any]) -> str:
    """'module:qualname' of a statistic, so a result file can name it without pickling it. The
    statistic must be registered (fexbench.core.schema.register_statistic; the tasks' own
    nanmean, spearman and auroc are), so the file can be read back."""
    return statistic_name(statistic)


def load_statistic(path: str) -> Callable[..., Any]:
    """The statistic a result file names, looked up in the registry of statistics
    (fexbench.core.schema.registered_statistics); nothing the file names is ever imported, and an
    unregistered name is a ValueError."""
    try:
        return resolve_statistic(path)
    except ValueError as exc:
        raise ValueError(f"statistic: {exc}") from None


def _columns(estimates: Sequence[Estimate]) -> list[np.ndarray]:
    """One replicate's columns over its explainer seeds: (S, n) arrays."""
    first = estimates[0]
    return [np.stack([np.asarray(e.columns[i], float) for e in estimates]) for i in range(len(first.columns))]


def _clusters(estimates: Sequence[Sequence[Estimate]], metric: str) -> tuple[np.ndarray | None, ...]:
    """Per replicate, the cluster ids its explainer seeds share (None: independent units)."""
    from fexbench.core import stats

    return tuple(stats.seed_clusters(r, f"{metric}: replicate {i}") for i, r in enumerate(estimates))


@dataclasses.dataclass(frozen=True)
class Pooled:
    metrics: tuple[MetricValue, ...]
    unit_values: Mapping[str, Any]


def pool(scored: Sequence[Sequence[Scored]], n_resamples: int = 2000, seed: int = 0) -> Pooled:
    """scored[r][s]: replicate r, explainer seed s. Returns the pooled metrics and unit values."""
    first = scored[0][0]
    if len(scored) == 1:
        per_seed = scored[0]
        metrics = per_seed[0].metrics if len(per_seed) == 1 else \
            pool_seeds([s.metrics for s in per_seed], [s.estimates for s in per_seed])
    else:
        metrics = tuple(_pool_replicates(m, scored, n_resamples, seed) for m in first.metrics)
    return Pooled(tuple(metrics), _unit_values(scored))


def _estimates_of(name: str, scored: Sequence[Sequence[Scored]]) -> list[list[Estimate]] | None:
    out = []
    for replicate in scored:
        found = [{e.metric.name: e for e in s.estimates}.get(name) for s in replicate]
        if any(e is None for e in found):
            return None
        out.append(found)
    return out


def _pool_replicates(metric: MetricValue, scored: Sequence[Sequence[Scored]], n_resamples: int,
                     seed: int) -> MetricValue:
    from fexbench.core import stats

    per_rep_values = []
    for replicate in scored:
        values = [{m.name: m.value for m in s.metrics}.get(metric.name, float("nan")) for s in replicate]
        per_rep_values.append(nanmean(values))
    estimates = _estimates_of(metric.name, scored)
    seed_values = tuple(v for replicate in scored for v in
                        ({m.name: m.value for m in s.metrics}.get(metric.name, float("nan")) for s in replicate))
    if estimates is None:  # a task without estimates: the mean over replicates, no interval
        return dataclasses.replace(metric, value=nanmean(per_rep_values), ci_low=float("nan"), ci_high=float("nan"),
                                   seed_values=seed_values, replicate_values=tuple(per_rep_values))
    replicated = stats.Replicated(estimates[0][0].statistic, tuple(tuple(_columns(r)) for r in estimates),
                                  clusters=_clusters(estimates, metric.name))
    ci = stats.interval(replicated, n_resamples=n_resamples, seed=seed)
    value, low, high = ci.value, ci.low, ci.high
    lo_range, hi_range = metric.value_range  # a t interval can reach past the metric's range
    low, high = max(low, lo_range), min(high, hi_range)
    n = sum(int(np.shape(r[0].columns[0])[-1]) if r[0].count is None else
            int(r[0].count(*_columns(r))) for r in estimates)
    return dataclasses.replace(metric, value=float(value), ci_low=float(low), ci_high=float(high), n=n,
                               seed_values=seed_values, replicate_values=tuple(float(v) for v in per_rep_values))


def _unit_values(scored: Sequence[Sequence[Scored]]) -> dict[str, Any]:
    """metric -> {"statistic": path, "replicates": [[column (S x n) as lists], ...]}, plus
    "clusters": [cluster ids (n,) or None, ...] (one entry per replicate, as "replicates") when
    the task gave cluster ids; without them the entry is as it was before cluster ids existed."""
    out: dict[str, Any] = {}
    for metric in scored[0][0].metrics:
        estimates = _estimates_of(metric.name, scored)
        if estimates is None:
            continue
        out[metric.name] = {"statistic": statistic_path(estimates[0][0].statistic),
                            "replicates": [[c.tolist() for c in _columns(r)] for r in estimates]}
        clusters = _clusters(estimates, metric.name)
        if any(c is not None for c in clusters):
            out[metric.name]["clusters"] = [None if c is None else [int(i) for i in c] for c in clusters]
    return out


def replicated_from_result(unit_values: Mapping[str, Any], metric: str) -> Any:
    """A `fexbench.core.stats.Replicated` rebuilt from a result file's unit values (independent
    units where the file keeps no cluster ids, as files written before they existed)."""
    from fexbench.core import stats

    entry = unit_values[metric]
    statistic = load_statistic(entry["statistic"])
    replicates = tuple(tuple(np.asarray([[np.nan if v is None else v for v in row] for row in col], float)
                             for col in rep) for rep in entry["replicates"])
    clusters = entry.get("clusters")
    if clusters is not None and len(clusters) != len(replicates):
        raise ValueError(f"unit values of {metric!r}: {len(clusters)} cluster entries for {len(replicates)} replicates")
    return stats.Replicated(statistic, replicates, clusters=None if clusters is None else tuple(clusters))
