"""Metrics that declare their own metadata (Quantus-style), with bootstrap confidence intervals.

A leaderboard sorts and groups by `higher_is_better`, `value_range` and `category` alone, so no
metric needs special handling downstream. Statistics are computed over subjects (or other units)
and their 95% CI comes from a percentile bootstrap over those units.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats


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

    @classmethod
    def of(cls, metric: Metric, value: float, ci: tuple[float, float], n: int) -> "MetricValue":
        return cls(metric.name, _clean(value), _clean(ci[0]), _clean(ci[1]), n, metric.higher_is_better,
                   metric.value_range, metric.category, metric.chance)


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


def nanmean(values, axis: int = -1):
    """Mean over the defined (non-NaN) entries; NaN when none is defined."""
    values = np.asarray(values, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(values, axis=axis) if values.size else np.float64("nan")
    return float(out) if np.ndim(out) == 0 else out


def bootstrap_ci(statistic: Callable[..., float], *columns: Sequence, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over paired units (rows of `columns`), via scipy.stats.bootstrap.

    `statistic(*columns, axis=-1)` must be batched (numpy-style) like the ones above.

    Resamples in which the statistic is undefined (NaN, e.g. AUROC with one class) are dropped,
    which scipy cannot do itself; we therefore collect the bootstrap distribution it returns.
    """
    data = tuple(np.asarray(c) for c in columns)
    if len(data[0]) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                              method="percentile", random_state=np.random.default_rng(seed),
                              confidence_level=level)
    dist = np.asarray(res.bootstrap_distribution, float)
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))
