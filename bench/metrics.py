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
from sklearn.metrics import roc_auc_score


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


def spearman(scores: Sequence[float], reference: Sequence[float]) -> float:
    """Spearman's rho; 0.0 when either side is constant (no ranking information, like AUROC's 0.5)."""
    x, y = np.asarray(scores, float), np.asarray(reference, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve of telling positives by score; NaN when only one class is present."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, float)))


def nanmean(values: Sequence[float]) -> float:
    values = np.asarray(values, float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def bootstrap_ci(statistic: Callable[..., float], *columns: Sequence, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over paired units (rows of `columns`), via scipy.stats.bootstrap.

    Resamples in which the statistic is undefined (NaN, e.g. AUROC with one class) are dropped,
    which scipy cannot do itself; we therefore collect the bootstrap distribution it returns.
    """
    data = tuple(np.asarray(c) for c in columns)
    if len(data[0]) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, paired=True, vectorized=False, n_resamples=n_resamples,
                              method="percentile", random_state=np.random.default_rng(seed),
                              confidence_level=level)
    dist = np.asarray(res.bootstrap_distribution, float)
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(dist, alpha)), float(np.quantile(dist, 1 - alpha))
