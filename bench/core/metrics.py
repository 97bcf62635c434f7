"""Metrics that declare their own metadata (Quantus-style), with bootstrap confidence intervals.

A leaderboard sorts and groups by `higher_is_better`, `value_range` and `category` alone, so no
metric needs special handling downstream. Statistics are computed over subjects (or other units)
and their 95% CI comes from a percentile bootstrap over those units.

A stochastic explainer is scored over several explainer seeds: each metric is then the mean of the
per-seed statistics, and its CI the percentile bootstrap of that mean, the units resampled jointly
for every seed (an `Estimate` keeps the per-unit columns so the harness can stack them).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fexbench.core import stats as replicated
from fexbench.core.lazymodule import lazy_module
from fexbench.core.stats import nanmean, same_clusters  # noqa: F401  (the tasks' statistics)

stats = lazy_module("scipy.stats")  # loaded on first use: `fexbench list` and `--help` stay fast


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    higher_is_better: bool
    value_range: tuple[float, float]
    category: str
    chance: float | None = None  # what an explanation unrelated to the model scores


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    value_range: tuple[float, float]
    category: str
    chance: float | None = None
    seed_values: tuple[float, ...] = ()  # one value per explainer seed, when more than one was scored
    replicate_values: tuple[float, ...] = ()  # one value per replicate (mean over its seeds), when R > 1

    @classmethod
    def of(cls, metric: Metric, value: float, ci: tuple[float, float], n: int,
           seed_values: Sequence[float] = ()) -> "MetricValue":
        return cls(metric.name, _clean(value), _clean(ci[0]), _clean(ci[1]), n, metric.higher_is_better,
                   metric.value_range, metric.category, metric.chance, tuple(_clean(v) for v in seed_values))


def _clean(x: float) -> float:
    return float("nan") if x is None or not math.isfinite(float(x)) else float(x)


def spearman(scores, reference, axis: int = -1):
    """Spearman's rho along `axis` (batched for the bootstrap); 0.0 where either side is constant
    (no ranking information, as AUROC's 0.5)."""
    x = stats.rankdata(np.asarray(scores, float), axis=axis)
    y = stats.rankdata(np.asarray(reference, float), axis=axis)
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, (x * y).sum(axis=axis) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(rho) if np.ndim(rho) == 0 else rho


def auroc(scores, positive, axis: int = -1):
    """Area under the ROC curve (Mann-Whitney U with tie-averaged ranks, equal to sklearn's
    roc_auc_score), batched along `axis`; NaN where only one class is present."""
    positive = np.asarray(positive, bool)
    ranks = stats.rankdata(np.asarray(scores, float), axis=axis)
    n_pos = positive.sum(axis=axis)
    n_neg = positive.shape[axis] - n_pos
    u = np.where(positive, ranks, 0.0).sum(axis=axis) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where((n_pos > 0) & (n_neg > 0), u / np.maximum(n_pos * n_neg, 1), np.nan)
    return float(auc) if np.ndim(auc) == 0 else auc


def _seed_columns(columns: Sequence) -> tuple[np.ndarray, ...]:
    """Columns as (R, n) arrays: a 1-D column is one seed, or is shared by every seed of the others."""
    data = [np.asarray(c) for c in columns]
    if any(d.ndim > 2 for d in data):
        raise ValueError("a metric column is (units,) or (explainer seeds, units)")
    seeds = max(d.shape[0] if d.ndim == 2 else 1 for d in data)
    return tuple(np.broadcast_to(d if d.ndim == 2 else d[None, :], (seeds, d.shape[-1])) for d in data)


def seed_mean(statistic: Callable[..., float], *columns: Sequence) -> float:
    """The statistic over the units, averaged over explainer seeds (columns (n,) or (R, n))."""
    data = _seed_columns(columns)
    if data[0].shape[-1] == 0:
        return float("nan")
    return nanmean(np.atleast_1d(statistic(*data, axis=-1)))


@dataclass(frozen=True, eq=False)
class Estimate:
    """A metric together with what it is computed from: a batched statistic over paired per-unit
    columns. A task returns these with its scores so that the harness can pool explainer seeds by
    stacking the columns. `interval`, when given, replaces the bootstrap (it gets the same columns,
    (n,) or (R, n)); `count` is the number of units reported (default: all of them). `clusters`,
    when given, is one integer id per unit (n,) naming the cluster it belongs to (the subject model
    of a unit): units of one cluster are not independent, so the bootstrap (and the replicated
    statistics of `fexbench.core.stats`) draws clusters, then units inside them; None: independent
    units."""

    metric: Metric
    statistic: Callable[..., float]
    columns: tuple[np.ndarray, ...]
    n_resamples: int = 1000
    seed: int = 0
    interval: Callable[..., tuple[float, float]] | None = None
    count: Callable[..., int] | None = None
    clusters: Sequence[int] | None = None

    def value(self, seed_values: Sequence[float] = ()) -> MetricValue:
        value = seed_mean(self.statistic, *self.columns)
        if self.interval is not None:
            ci = self.interval(*self.columns)
        else:
            ci = self._unit_ci()
        n = self.count(*self.columns) if self.count is not None else int(np.shape(self.columns[0])[-1])
        return MetricValue.of(self.metric, value, ci, n, seed_values)

    def _unit_ci(self) -> tuple[float, float]:
        """The one-replicate interval of fexbench.core.stats: the percentile bootstrap over units
        (clusters, then units inside them, when the units carry cluster ids), the same draws that
        the replicated statistics and the paired comparisons use; one bootstrap implementation."""
        one = replicated.Replicated(self.statistic, (self.columns,), self.metric, (self.clusters,))
        found = replicated.interval(one, n_resamples=self.n_resamples, seed=self.seed)
        return found.low, found.high

    @classmethod
    def pooled(cls, per_seed: Sequence["Estimate"]) -> MetricValue:
        """One metric over explainer seeds: the per-seed columns stacked into (R, n) arrays."""
        first = per_seed[0]
        shapes = {tuple(np.shape(c)) for e in per_seed for c in e.columns}
        if len(shapes) != 1 or len(shapes.pop()) != 1:
            raise ValueError(f"{first.metric.name}: every explainer seed must give the same units (1-D columns)")
        if not all(same_clusters(e.clusters, first.clusters) for e in per_seed):
            raise ValueError(f"{first.metric.name}: every explainer seed must give the same cluster ids")
        stacked = tuple(np.stack([np.asarray(e.columns[i], float) for e in per_seed])
                        for i in range(len(first.columns)))
        seed_values = [seed_mean(e.statistic, *e.columns) for e in per_seed]
        return dataclasses.replace(first, columns=stacked).value(seed_values)


def finite_count(column: Sequence) -> int:
    """Units on which a per-unit metric is defined (finite for at least one explainer seed)."""
    finite = np.isfinite(np.asarray(column, float))
    return int((finite.any(axis=0) if finite.ndim == 2 else finite).sum())


def pool_seeds(per_seed: Sequence[tuple[MetricValue, ...]],
               estimates: Sequence[Sequence[Estimate]]) -> tuple[MetricValue, ...]:
    """Metric values over explainer seeds: from the tasks' Estimates when every seed gave one
    (mean of the per-seed statistics, bootstrap CI of that mean); otherwise the mean of the
    per-seed values with no CI, since the units behind them are unknown."""
    out = []
    for first in per_seed[0]:
        found = [{e.metric.name: e for e in seed_estimates}.get(first.name) for seed_estimates in estimates]
        values = [{m.name: m.value for m in seed}.get(first.name, float("nan")) for seed in per_seed]
        if all(e is not None for e in found):
            out.append(Estimate.pooled(found))
        else:
            out.append(dataclasses.replace(first, value=nanmean(values), ci_low=float("nan"),
                                           ci_high=float("nan"), seed_values=tuple(_clean(v) for v in values)))
    return tuple(out)
