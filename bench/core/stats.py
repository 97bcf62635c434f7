"""Statistics of a replicated benchmark: intervals, paired comparisons, rank groups and power.

A replicate is one independent run of a task's world: its own data, subject-model zoo and
explainer seeds. A metric's value in replicate r is the mean over explainer seeds of a batched
statistic over that replicate's units; the benchmark's value is the mean over replicates. What a
reader wants to know is how much that value would move if the whole benchmark were run again
(new worlds, new zoos, new seeds), not only how much it moves when one zoo's units are resampled.

Intervals. The replicate values v_1..v_R are independent draws of the same quantity, and each
already contains its own unit and seed noise, so Var(mean v) = Var(v_r) / R and the sample
variance of the v_r estimates it without bias. A two-stage (hierarchical) bootstrap that
resamples replicates and then units estimates ((R-1)/R) s^2/R + (unit-bootstrap variance)/R:
it shrinks the between-replicate part and counts the unit noise twice; with 3-5 replicates its
percentiles are also too short-tailed. Removing both biases leaves s^2/R exactly, so for R >= 2
we use the Student-t interval mean +- t_{R-1} s / sqrt(R) (and the paired t-test for
differences). With one replicate nothing is known about the replicate-to-replicate spread; the
interval is then the percentile unit bootstrap of that one replicate (the single-zoo interval of
`fexbench.core.metrics.bootstrap_ci`), which states the uncertainty of that zoo only. Units that
carry cluster ids (a task whose units belong to subject models, explained well or badly together)
are resampled in two stages, clusters with replacement and then units inside each drawn cluster,
so clustered units are not counted as independent (`Replicated.clusters`, `_plan`). The
hierarchical bootstrap's draws of each replicate also give the within-replicate unit variance
that the power analysis needs. docs/statistics.md has the measured coverage, and its limit: replicate
values strongly skewed (a metric pinned near its bound with rare bad replicates) under-cover.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
import warnings
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from fexbench.core.lazymodule import lazy_module

optimize, stats = lazy_module("scipy.optimize"), lazy_module("scipy.stats")  # loaded on first use

if TYPE_CHECKING:  # typing only: fexbench.core.metrics builds on this module
    from fexbench.core.metrics import Estimate, Metric


def nanmean(values, axis: int = -1):
    """Mean over the defined (non-NaN) entries; NaN when none is defined."""
    values = np.asarray(values, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(values, axis=axis) if values.size else np.float64("nan")
    return float(out) if np.ndim(out) == 0 else out


def same_clusters(a: Sequence[int] | None, b: Sequence[int] | None) -> bool:
    """Whether two Estimates' cluster ids are the same (both None, or equal ids)."""
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))

__all__ = ["Replicated", "Interval", "Comparison", "Ranking", "Components", "Design", "interval",
           "hierarchical_bootstrap", "compare", "unpaired", "probability_of_improvement", "holm",
           "rank_groups", "ranks_from_tests", "variance_components", "pilot_components", "minimum_detectable_difference",
           "simulate_mdd", "design_table", "cheapest_design"]


def _columns(columns: Sequence) -> tuple[np.ndarray, ...]:
    """One replicate's columns as (S, n) arrays: a 1-D column is one seed, or is shared by every
    seed of the others (as in `fexbench.core.metrics`)."""
    data = [np.asarray(c) for c in columns]
    if not data or any(d.ndim not in (1, 2) for d in data):
        raise ValueError("a replicate has one or more columns, each (units,) or (explainer seeds, units)")
    units = {d.shape[-1] for d in data}
    if len(units) != 1:
        raise ValueError(f"the columns of one replicate must have the same units, got counts {sorted(units)}")
    seeds = {d.shape[0] for d in data if d.ndim == 2} - {1}
    if len(seeds) > 1:
        raise ValueError(f"the columns of one replicate disagree on the number of seeds: {sorted(seeds)}")
    s = seeds.pop() if seeds else 1
    return tuple(np.broadcast_to(d if d.ndim == 2 else d[None, :], (s, d.shape[-1])) for d in data)


def cluster_ids(ids, units: int, where: str = "") -> np.ndarray | None:
    """One replicate's cluster ids as a read-only int array (units,), or None (independent units);
    ValueError, naming `where`, for a wrong length or ids that are not integers."""
    if ids is None:
        return None
    prefix = f"{where}: " if where else ""
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != units:
        raise ValueError(f"{prefix}cluster ids must be one per unit ({units}), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{prefix}cluster ids must be integers, got {arr.dtype} values")
    arr = arr.astype(np.int64)
    arr.flags.writeable = False
    return arr


def seed_clusters(estimates: Sequence[Estimate], where: str = "") -> np.ndarray | None:
    """The cluster ids of one replicate's Estimates (one per explainer seed), which must agree."""
    first = estimates[0].clusters
    if not all(same_clusters(e.clusters, first) for e in estimates):
        raise ValueError(f"{where}: every explainer seed must give the same cluster ids")
    return None if first is None else np.asarray(first)


@dataclass(frozen=True, eq=False)
class Replicated:
    """One metric of one explainer on one task over replicates.

    `statistic(*columns, axis=-1)` is batched like `fexbench.core.metrics.spearman`; `replicates`
    holds, per replicate, a tuple of columns of shape (S, n_r) (S explainer seeds, n_r units; a
    1-D column is one seed or is shared by every seed). Value = mean over replicates of the mean
    over seeds of the statistic over that replicate's units; NaN statistics are left out of both
    means, as `metrics.nanmean` does.

    `clusters`, when given, holds per replicate None (independent units) or one integer cluster id
    per unit (n_r,): units of one cluster (the subject model they belong to) vary together, so the
    unit bootstrap of that replicate draws clusters, then units inside them (`_plan`)."""

    statistic: Callable[..., np.ndarray]
    replicates: tuple[tuple[np.ndarray, ...], ...]
    metric: Metric | None = None
    clusters: tuple[np.ndarray | None, ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.replicates:
            raise ValueError("a Replicated needs at least one replicate")
        object.__setattr__(self, "replicates", tuple(_columns(r) for r in self.replicates))
        clusters = (None,) * len(self.replicates) if self.clusters is None else tuple(self.clusters)
        if len(clusters) != len(self.replicates):
            raise ValueError(f"clusters: one entry (None or one id per unit) per replicate, got {len(clusters)} "
                             f"for {len(self.replicates)} replicates")
        object.__setattr__(self, "clusters", tuple(
            cluster_ids(c, cols[0].shape[-1], f"replicate {r}") for r, (c, cols) in
            enumerate(zip(clusters, self.replicates))))

    @classmethod
    def of(cls, per_replicate: Sequence[Sequence[Estimate]]) -> "Replicated":
        """From the tasks' Estimates: per replicate, one Estimate per explainer seed (same metric,
        same 1-D units and the same cluster ids for every seed of a replicate)."""
        first = per_replicate[0][0]
        reps, clusters = [], []
        for r, seeds in enumerate(per_replicate):
            shapes = {tuple(np.shape(c)) for e in seeds for c in e.columns}
            if len(shapes) != 1 or len(next(iter(shapes))) != 1:
                raise ValueError(f"{first.metric.name}: replicate {r}: every explainer seed must give "
                                 f"the same units (1-D columns), got shapes {sorted(shapes)}")
            reps.append(tuple(np.stack([np.asarray(e.columns[i]) for e in seeds])
                              for i in range(len(first.columns))))
            clusters.append(seed_clusters(seeds, f"{first.metric.name}: replicate {r}"))
        return cls(first.statistic, tuple(reps), first.metric, tuple(clusters))

    @property
    def cluster_key(self) -> tuple[tuple[int, ...] | None, ...]:
        """The cluster ids as hashable tuples (None: independent units), per replicate."""
        if "cluster_key" not in self._cache:
            self._cache["cluster_key"] = tuple(None if c is None else tuple(c.tolist()) for c in self.clusters)
        return self._cache["cluster_key"]

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(int(cols[0].shape[-1]) for cols in self.replicates)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(int(cols[0].shape[0]) for cols in self.replicates)

    def seed_values(self) -> list[np.ndarray]:
        """Per replicate, the statistic of each explainer seed, shape (S_r,)."""
        if "seed_values" not in self._cache:
            out = []
            for cols in self.replicates:
                if cols[0].shape[-1] == 0:
                    out.append(np.full(cols[0].shape[0], np.nan))
                else:
                    out.append(np.atleast_1d(np.asarray(self.statistic(*cols, axis=-1), float)))
            self._cache["seed_values"] = out
        return self._cache["seed_values"]

    def replicate_values(self) -> np.ndarray:
        """Per replicate, the mean over explainer seeds, shape (R,)."""
        return np.array([nanmean(v) for v in self.seed_values()], float)

    @property
    def value(self) -> float:
        return nanmean(self.replicate_values())


def _two_stage(rng: np.random.Generator, clusters: tuple[int, ...], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`size` two-stage resamples of one replicate's units: its K clusters drawn with replacement,
    then inside each drawn cluster as many units as it has, with replacement. A resample's length
    is the sum of its drawn clusters' sizes, so the resamples are returned in groups of one length:
    (rows, idx), rows the resamples (positions among `size`), idx their unit indices (rows, length)."""
    ids, inverse, sizes = np.unique(np.asarray(clusters), return_inverse=True, return_counts=True)
    by_cluster = np.argsort(inverse, kind="stable")  # unit indices, cluster by cluster
    starts = np.cumsum(sizes) - sizes
    drawn = rng.integers(ids.size, size=(size, ids.size))  # (size, K) clusters drawn
    drawn_sizes = sizes[drawn]
    lengths = drawn_sizes.sum(axis=1)
    unit_cluster = np.repeat(drawn.ravel(), drawn_sizes.ravel())  # the cluster of each drawn unit
    flat = by_cluster[starts[unit_cluster] + rng.integers(sizes[unit_cluster])]
    offsets = np.cumsum(lengths) - lengths
    groups = []
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        groups.append((rows, flat[offsets[rows][:, None] + np.arange(length)]))
    return groups


@functools.lru_cache(maxsize=64)
def _plan(units: tuple[int, ...], n_resamples: int, seed: int,
          clusters: tuple[tuple[int, ...] | None, ...] | None = None):
    """Resample indices that depend only on the unit counts and cluster ids: two explainers scored
    on the same units get the same draws, which is what makes a comparison paired. Returns the
    replicate drawn in each slot (B, R) and, per source replicate, the flat slots it fills and its
    unit draws there as groups (rows, idx): `slots[rows]` drew the unit indices idx (one row per
    slot, shared by every seed and column). A replicate without cluster ids draws n of its n units
    (one group, the draws of before cluster ids existed); one with ids draws two-stage (`_two_stage`)."""
    rng = np.random.default_rng(seed)
    reps = len(units)
    clusters = (None,) * reps if clusters is None else clusters
    which = rng.integers(reps, size=(n_resamples, reps)) if reps > 1 else np.zeros((n_resamples, 1), int)
    flat = which.ravel()
    per_rep = []
    for r, n in enumerate(units):
        slots = np.flatnonzero(flat == r)
        if clusters[r] is not None and n:
            per_rep.append((slots, _two_stage(rng, clusters[r], slots.size)))
            continue
        idx = rng.integers(n, size=(slots.size, n)) if n else np.zeros((slots.size, 0), int)
        per_rep.append((slots, [(np.arange(slots.size), idx)]))
    return which, per_rep


def _slot_values(est: Replicated, n_resamples: int, seed: int) -> np.ndarray:
    """The hierarchical bootstrap's slots (B, R): each the seed-mean statistic of the replicate drawn
    there, over its resampled units. Cached on the Replicated, so all pairs of a task reuse it."""
    key = ("slots", n_resamples, seed)
    if key not in est._cache:
        _, per_rep = _plan(est.units, n_resamples, seed, est.cluster_key)
        out = np.full(n_resamples * len(est.units), np.nan)
        for cols, (slots, groups) in zip(est.replicates, per_rep):
            for rows, idx in groups:
                if rows.size == 0 or idx.shape[1] == 0:
                    continue
                s, n = cols[0].shape[0], idx.shape[1]
                drawn = [c[:, idx].reshape(s * rows.size, n) for c in cols]
                values = np.asarray(est.statistic(*drawn, axis=-1), float).reshape(s, rows.size)
                out[slots[rows]] = nanmean(values, axis=0)
        est._cache[key] = out.reshape(n_resamples, len(est.units))
    return est._cache[key]


def hierarchical_bootstrap(est: Replicated, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution (B,) of the benchmark value: replicates drawn with replacement, and
    inside each drawn replicate its units with replacement (the same units for every seed and
    column; clusters, then units inside them, for a replicate with cluster ids). With one
    replicate this is the unit bootstrap of `metrics.bootstrap_ci`."""
    return nanmean(_slot_values(est, n_resamples, seed), axis=1)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    se: float  # standard error of the value (NaN for a percentile interval)
    df: float  # degrees of freedom of the t quantile (NaN for a percentile interval)
    replicates: int  # replicates with a defined value
    method: str  # "t" (over replicates), "unit-bootstrap" (one replicate) or "percentile"


def _percentile(dist: np.ndarray, level: float) -> tuple[float, float]:
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(dist, a)), float(np.quantile(dist, 1 - a))


def _t_interval(values: np.ndarray, level: float) -> tuple[float, float, float, float, float]:
    """mean, low, high, se, df of the Student-t interval over independent replicate values."""
    k = values.size
    mean = float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(k))
    half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * se
    return mean, mean - half, mean + half, se, float(k - 1)


def _subset(est: Replicated, keep: np.ndarray) -> Replicated:
    kept = np.flatnonzero(keep)
    return Replicated(est.statistic, tuple(est.replicates[i] for i in kept), est.metric,
                      tuple(est.clusters[i] for i in kept))


def interval(est: Replicated, n_resamples: int = 2000, seed: int = 0, level: float = 0.95,
             method: str = "t") -> Interval:
    """The uncertainty of the benchmark's value (of running the whole benchmark again).

    method "t" (default): with R >= 2 replicates of defined value, mean +- t_{R-1} * s/sqrt(R),
    s the standard deviation of the replicate values; with one, the percentile unit bootstrap of
    that replicate (uncertainty of that one zoo; two-stage when its units carry cluster ids). method "percentile": the plain percentile
    hierarchical bootstrap, which under-covers with few replicates; kept to measure that."""
    if method not in ("t", "percentile"):
        raise ValueError(f"method is 't' or 'percentile', not {method!r}")
    values = est.replicate_values()
    finite = np.isfinite(values)
    k = int(finite.sum())
    if k == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, math.nan, 0, method)
    if method == "percentile" or k == 1:
        source = est if k == values.size else _subset(est, finite)
        if source.units[0] < 2 and k == 1:
            return Interval(float(values[finite][0]), math.nan, math.nan, math.nan, math.nan, 1, "unit-bootstrap")
        low, high = _percentile(hierarchical_bootstrap(source, n_resamples, seed), level)
        return Interval(nanmean(values), low, high, math.nan, math.nan, k,
                        "unit-bootstrap" if k == 1 else "percentile")
    mean, low, high, se, df = _t_interval(values[finite], level)
    return Interval(mean, low, high, se, df, k, "t")


@dataclass(frozen=True)
class Comparison:
    """a - b on one metric of one task. `p_value` is two-sided for "no difference";
    `prob_improvement` is P(a > b) over pairs of replicates (ties count half), higher is a
    better only if the metric's higher is better."""
    difference: float
    low: float
    high: float
    p_value: float
    prob_improvement: float
    prob_low: float
    prob_high: float
    replicates: int
    paired: bool
    method: str  # "t" (paired t / Welch over replicates), "unit-bootstrap" (one replicate), "unit-variance"
    # (replicate differences without spread: normal interval from the units' variance) or "no-spread"


def _check_same_units(a: Replicated, b: Replicated) -> None:
    if len(a.units) != len(b.units):
        raise ValueError(f"a paired comparison needs the same replicates: {len(a.units)} vs {len(b.units)}")
    for r, (na, nb) in enumerate(zip(a.units, b.units)):
        if na != nb:
            raise ValueError(f"a paired comparison needs the same units: replicate {r} has {na} units "
                             f"in the first and {nb} in the second")
    for r, (ca, cb) in enumerate(zip(a.cluster_key, b.cluster_key)):
        if ca == cb:
            continue
        if ca is None or cb is None:
            what = "cluster ids in the " + ("second" if ca is None else "first") + " only"
        else:
            what = f"different cluster ids (first at unit {next(i for i, (x, y) in enumerate(zip(ca, cb)) if x != y)})"
        raise ValueError(f"a paired comparison needs the same cluster ids: replicate {r} has {what}")


def probability_of_improvement(a_values, b_values) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 for X a random entry of a's last axis and Y of b's (Agarwal et al.
    2021, rliable), batched over leading axes; NaN entries are left out."""
    a = np.asarray(a_values, float)[..., :, None]
    b = np.asarray(b_values, float)[..., None, :]
    score = np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))
    score = np.where(np.isfinite(a) & np.isfinite(b), score, np.nan)
    return nanmean(score.reshape(score.shape[:-2] + (-1,)), axis=-1)


def _bootstrap_p(dist: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from a bootstrap distribution of the difference:
    twice the smaller tail mass beyond zero (0 lies outside the percentile (1-p) interval)."""
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return math.nan
    if np.all(dist == 0):
        return 1.0
    return float(min(1.0, 2 * min(np.mean(dist <= 0), np.mean(dist >= 0))))


def _t_test(diffs: np.ndarray, level: float) -> tuple[float, float, float, float]:
    mean, low, high, se, df = _t_interval(diffs, level)
    if se == 0:  # never infinite significance from values without spread
        p = 1.0
    else:
        p = float(2 * stats.t.sf(abs(mean / se), df))
    return mean, low, high, p


def _replicate_draws(k: int, n_resamples: int, seed: int) -> np.ndarray:
    """Indices (B, k) of k replicates drawn with replacement, for the interval of P(a > b)."""
    return np.random.default_rng(seed).integers(k, size=(n_resamples, k))


def compare(a: Replicated, b: Replicated, n_resamples: int = 2000, seed: int = 0,
            level: float = 0.95) -> Comparison:
    """Paired difference a - b on the same replicates, units and cluster ids (ValueError otherwise).

    With R >= 2 replicates where both are defined: the paired t interval and t-test over the
    per-replicate differences (each already carries its unit and seed noise). P(a > b) compares
    every replicate of a with every replicate of b; its interval is the percentile bootstrap over
    replicates, the same draws for both (as rliable does over runs; descriptive, coarse with few
    replicates). With one replicate: the percentile unit bootstrap of the difference and of
    P(a > b), the same unit draws for both (two-stage, clusters then units, when the units carry
    cluster ids), the p-value from that distribution."""
    _check_same_units(a, b)
    va, vb = a.replicate_values(), b.replicate_values()
    both = np.isfinite(va) & np.isfinite(vb)
    k = int(both.sum())
    if k == 0:
        return Comparison(*(math.nan,) * 7, 0, True, "t")
    va, vb = va[both], vb[both]
    prob = float(probability_of_improvement(va, vb))
    if k >= 2:
        diffs = va - vb
        idx = _replicate_draws(k, n_resamples, seed)
        prob_low, prob_high = _percentile(probability_of_improvement(va[idx], vb[idx]), level)
        if np.ptp(diffs) > 1e-12 * max(1.0, float(np.max(np.abs(diffs)))):  # float noise is no spread
            diff, low, high, p = _t_test(diffs, level)
            return Comparison(diff, low, high, p, prob, prob_low, prob_high, k, True, "t")
        # the replicate differences are all equal (a discrete metric): their spread says nothing,
        # so the variance of the mean difference comes from the units inside each replicate
        a1, b1 = (a, b) if both.all() else (_subset(a, both), _subset(b, both))
        draws = _slot_values(a1, n_resamples, seed) - _slot_values(b1, n_resamples, seed)
        which = _plan(a1.units, n_resamples, seed, a1.cluster_key)[0]
        unit_var = []
        for r in range(k):
            d = draws[which == r]
            d = d[np.isfinite(d)]
            unit_var.append(float(d.var(ddof=1)) if d.size > 1 else 0.0)
        diff = float(diffs.mean())
        se = math.sqrt(sum(unit_var)) / k
        if se == 0:  # no spread anywhere: no evidence either way can be claimed
            return Comparison(diff, diff, diff, 1.0, prob, prob_low, prob_high, k, True, "no-spread")
        half = float(stats.norm.ppf(0.5 + level / 2)) * se
        p = float(2 * stats.norm.sf(abs(diff) / se))
        return Comparison(diff, diff - half, diff + half, p, prob, prob_low, prob_high, k, True, "unit-variance")
    a1, b1 = (a, b) if both.size == 1 else (_subset(a, both), _subset(b, both))
    sa, sb = _slot_values(a1, n_resamples, seed)[:, 0], _slot_values(b1, n_resamples, seed)[:, 0]
    dist = sa - sb
    low, high = _percentile(dist, level)
    prob_low, prob_high = _percentile(probability_of_improvement(sa[:, None], sb[:, None]), level)
    return Comparison(float(va[0] - vb[0]), low, high, _bootstrap_p(dist), prob, prob_low, prob_high,
                      1, True, "unit-bootstrap")


def unpaired(a: Replicated, b: Replicated, n_resamples: int = 2000, seed: int = 0,
             level: float = 0.95) -> Comparison:
    """a - b as if the two had been scored on independent replicates and units: Welch's t over
    replicates when both have two or more (P(a > b) bootstrapped over each one's replicates
    independently), else independent percentile bootstraps. For methods scored on different
    worlds; on shared worlds `compare` is the right one."""
    va, vb = a.replicate_values(), b.replicate_values()
    fa, fb = np.isfinite(va), np.isfinite(vb)
    va, vb = va[fa], vb[fb]
    if va.size == 0 or vb.size == 0:
        return Comparison(*(math.nan,) * 7, 0, False, "t")
    prob = float(probability_of_improvement(va, vb))
    if va.size >= 2 and vb.size >= 2:
        res = stats.ttest_ind(va, vb, equal_var=False)
        ci = res.confidence_interval(level)
        ia, ib = _replicate_draws(va.size, n_resamples, seed), _replicate_draws(vb.size, n_resamples, seed + 1)
        prob_low, prob_high = _percentile(probability_of_improvement(va[ia], vb[ib]), level)
        return Comparison(float(va.mean() - vb.mean()), float(ci.low), float(ci.high), float(res.pvalue),
                          prob, prob_low, prob_high, min(va.size, vb.size), False, "t")
    sa = hierarchical_bootstrap(a if fa.all() else _subset(a, fa), n_resamples, seed)
    sb = hierarchical_bootstrap(b if fb.all() else _subset(b, fb), n_resamples, seed + 1)
    dist = sa - sb
    low, high = _percentile(dist, level)
    prob_low, prob_high = _percentile(probability_of_improvement(sa[:, None], sb[:, None]), level)
    return Comparison(float(va.mean() - vb.mean()), low, high, _bootstrap_p(dist), prob, prob_low, prob_high,
                      min(va.size, vb.size), False, "unit-bootstrap")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN stays NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


@dataclass(frozen=True)
class Ranking:
    ranks: dict[str, int]  # 1 + the number of methods significantly better (ties share a rank)
    significant: frozenset[tuple[str, str]]  # (better, worse) pairs significant after Holm
    adjusted_p: dict[tuple[str, str], float]  # Holm-adjusted p per pair, keyed as compared
    comparisons: dict[tuple[str, str], Comparison]


def rank_groups(values: Mapping[str, Replicated | float], comparisons: Mapping[tuple[str, str], Comparison] | None = None,
                higher_is_better: bool = True, alpha: float = 0.05, n_resamples: int = 2000,
                seed: int = 0) -> Ranking:
    """Rank groups of the methods of one task on one metric.

    Every pair is tested (given `comparisons` keyed (a, b) in either order, else `compare` on the
    Replicated values), the p-values are Holm-adjusted over all pairs, and a method's rank is one
    plus the number of methods significantly better than it: methods the data cannot separate
    share a rank."""
    names = list(values)
    comps: dict[tuple[str, str], Comparison] = {}
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            if comparisons is not None and (x, y) in comparisons:
                comps[(x, y)] = comparisons[(x, y)]
            elif comparisons is not None and (y, x) in comparisons:
                comps[(y, x)] = comparisons[(y, x)]
            elif isinstance(values[x], Replicated) and isinstance(values[y], Replicated):
                comps[(x, y)] = compare(values[x], values[y], n_resamples=n_resamples, seed=seed)
            else:
                raise ValueError(f"no comparison for {x} and {y}, and their values are not Replicated")
    keys = list(comps)
    ranks, significant, adjusted = ranks_from_tests(names, keys, [comps[k].difference for k in keys],
                                                    [comps[k].p_value for k in keys], higher_is_better, alpha)
    return Ranking(ranks, significant, dict(zip(keys, map(float, adjusted))), comps)


def rank_intervals(names: Sequence[str], pairs: Sequence[tuple[str, str]], differences: Sequence[float],
                   p_values: Sequence[float], higher_is_better: bool = True,
                   alpha: float = 0.05) -> tuple[dict[str, tuple[int, int]], frozenset]:
    """The board's rank rule over one family of methods (every pair tested, Holm within the family):
    each method's rank interval [1 + methods significantly better, M - methods significantly worse]
    among the M methods, and the significant (better, worse) pairs. "No evidence" is a wide
    interval, never a shared first place."""
    ranks, significant, _ = ranks_from_tests(names, pairs, differences, p_values, higher_is_better, alpha)
    m = len(names)
    worse = {n: sum(1 for better, _ in significant if better == n) for n in names}
    return {n: (ranks[n], m - worse[n]) for n in names}, significant


def ranks_from_tests(names: Sequence[str], pairs: Sequence[tuple[str, str]], differences: Sequence[float],
                     p_values: Sequence[float], higher_is_better: bool = True,
                     alpha: float = 0.05) -> tuple[dict[str, int], frozenset, np.ndarray]:
    """The rank rule of `rank_groups` from the pairs' differences (a - b) and unadjusted p-values:
    Holm over all pairs, a pair significant when its adjusted p <= alpha and the difference is
    non-zero, rank = 1 + the number of methods significantly better. Kept apart so that the
    rank-stability simulation (fexbench.analysis.stability) ranks with exactly this rule."""
    adjusted = holm(p_values)
    significant = set()
    for (x, y), p, d in zip(pairs, adjusted, differences):
        if np.isfinite(p) and p <= alpha and np.isfinite(d) and d != 0:
            better_is_x = (d > 0) == higher_is_better
            significant.add((x, y) if better_is_x else (y, x))
    ranks = {n: 1 + sum(1 for better, worse in significant if worse == n) for n in names}
    return ranks, frozenset(significant), adjusted


# --- power -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Components:
    """Variance components of a replicate's value (of a metric, or of a paired difference):
    Var(v_r) = replicate + seed / S + unit / n for S explainer seeds and n units."""
    replicate: float  # between replicates, beyond what their seeds and units explain
    seed: float  # across explainer seeds on the same units (0 when the pilot had one seed)
    unit: float  # per unit: the unit part of a replicate's value has variance unit / n
    units: int  # the pilot's units per replicate (rounded mean)
    seeds: int  # the pilot's seeds per replicate (largest)
    replicates: int  # the pilot's replicates
    observed: float  # the sample variance of the pilot's replicate values
    seed_estimated: bool  # False: one seed, seed noise is inside `replicate`

    def variance(self, seeds: int | None = None, units: int | None = None) -> float:
        seeds = self.seeds if seeds is None else seeds
        units = self.units if units is None else units
        return self.replicate + self.seed / seeds + self.unit / units


def variance_components(values: Sequence[Sequence[float]], unit_variances: Sequence[float],
                        units: Sequence[int]) -> Components:
    """Components from a pilot by the method of moments.

    `values[r]` are replicate r's per-seed values (of a metric or of a paired difference),
    `unit_variances[r]` the unit-bootstrap variance of replicate r's seed-mean (units resampled,
    seeds fixed), `units[r]` its unit count. seed = pooled within-replicate variance across seeds;
    unit = mean of n_r * w_r * n_r/(n_r-1) (the bootstrap's variance is short by (n-1)/n);
    replicate = max(0, variance of the replicate means - seed/S - unit/n), so the three add up to
    the observed spread at the pilot's design unless that spread is below what seeds and units
    alone would give."""
    vals = [np.asarray(v, float) for v in values]
    vals = [v[np.isfinite(v)] for v in vals]
    w = np.asarray(unit_variances, float)
    n = np.asarray(units, float)
    keep = np.array([v.size > 0 for v in vals]) & np.isfinite(w) & (n >= 2)
    vals, w, n = [v for v, k in zip(vals, keep) if k], w[keep], n[keep]
    if not vals:
        raise ValueError("no replicate with a defined value, a unit variance and two or more units")
    s = np.array([v.size for v in vals], float)
    dof = s - 1
    seed = float(sum(v.var(ddof=1) * (v.size - 1) for v in vals if v.size > 1) / dof.sum()) if dof.sum() else 0.0
    unit = float(np.mean(w * n * n / (n - 1)))
    means = np.array([v.mean() for v in vals])
    observed = float(means.var(ddof=1)) if means.size > 1 else math.nan
    replicate = max(0.0, observed - float(np.mean(seed / s + unit / n))) if means.size > 1 else math.nan
    return Components(replicate, seed, unit, int(round(float(n.mean()))), int(s.max()), int(means.size),
                      observed, bool(dof.sum() > 0))


def pilot_components(a: Replicated, b: Replicated | None = None, n_resamples: int = 1000,
                     seed: int = 0) -> Components:
    """`variance_components` of a metric (or, with b, of the paired difference a - b; b may have
    one seed or as many as a) measured on a pilot run, unit variances from the hierarchical
    bootstrap's draws of each replicate.

    A replicate with cluster ids is resampled by clusters, then units (`_plan`), so its unit
    variance includes the clusters' spread: the `unit` component then holds all the variance that
    comes from which clusters and units a replicate has (not `replicate`), and scaling it as
    unit / n assumes more units come in proportionally more clusters. The bootstrap of K clusters
    is short by (K-1)/K rather than (n-1)/n, so its variance is corrected by K/(K-1) instead."""
    values = a.seed_values()
    slots = _slot_values(a, n_resamples, seed)
    if b is not None:
        _check_same_units(a, b)
        values = [x - y for x, y in zip(values, b.seed_values())]
        slots = slots - _slot_values(b, n_resamples, seed)
    which = _plan(a.units, n_resamples, seed, a.cluster_key)[0]
    w = []
    for r, (n, ids) in enumerate(zip(a.units, a.cluster_key)):
        drawn = slots[which == r]
        drawn = drawn[np.isfinite(drawn)]
        var = float(drawn.var(ddof=1)) if drawn.size > 1 else math.nan
        k = len(set(ids)) if ids is not None else 0
        if k >= 2 and n >= 2:  # variance_components multiplies by n/(n-1): make that K/(K-1)
            var *= (k / (k - 1)) * ((n - 1) / n)
        w.append(var)
    return variance_components(values, w, a.units)


def _power(nc: float, df: int, alpha: float) -> float:
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = float(stats.nct.cdf(-crit, df, nc))  # NaN in scipy when vanishingly small
    return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)


@functools.lru_cache(maxsize=512)
def _noncentrality(df: int, alpha: float, power: float) -> float:
    """The noncentrality at which the two-sided t-test with df degrees of freedom has `power`."""
    hi = float(stats.t.ppf(1 - alpha / 2, df)) + 4.0
    while _power(hi, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda nc: _power(nc, df, alpha) - power, 0.0, hi, xtol=1e-10))


def minimum_detectable_difference(components: Components, replicates: int, seeds: int | None = None,
                                  units: int | None = None, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference the paired t-test over `replicates` replicates detects with
    probability `power` at two-sided level `alpha` (exact noncentral-t power, normal replicate
    values of variance components.variance(seeds, units)). Infinite with fewer than 2 replicates:
    one replicate cannot measure the replicate-to-replicate spread."""
    if replicates < 2:
        return math.inf
    se = math.sqrt(components.variance(seeds, units) / replicates)
    return _noncentrality(replicates - 1, alpha, power) * se


def simulate_mdd(components: Components, replicates: int, seeds: int | None = None, units: int | None = None,
                 alpha: float = 0.05, power: float = 0.8, n_sim: int = 4000, seed: int = 0) -> float:
    """The minimum detectable difference found by simulation: n_sim benchmarks drawn from the
    components (a normal replicate effect, S seed effects, n unit values per replicate), each
    tested with the paired t-test of `compare`; the shift at which the rejection rate reaches
    `power` is found by bisection on the same draws."""
    if replicates < 2:
        return math.inf
    seeds = components.seeds if seeds is None else seeds
    units = components.units if units is None else units
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, math.sqrt(components.replicate), (n_sim, replicates))
    noise += rng.normal(0.0, math.sqrt(components.seed), (n_sim, replicates, seeds)).mean(axis=-1)
    for r in range(replicates):  # one replicate at a time keeps memory at n_sim * units
        noise[:, r] += rng.normal(0.0, math.sqrt(components.unit), (n_sim, units)).mean(axis=-1)
    mean = noise.mean(axis=1)
    half = stats.t.ppf(1 - alpha / 2, replicates - 1) * noise.std(axis=1, ddof=1) / math.sqrt(replicates)
    rate = lambda delta: float(np.mean(np.abs(delta + mean) > half))
    hi = 1.0 * math.sqrt(components.variance(seeds, units)) + 1e-12
    while rate(hi) < power:
        hi *= 2
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate(mid) < power else (lo, mid)
    return hi


@dataclass(frozen=True)
class Design:
    replicates: int
    seeds: int
    units: int
    mdd: float
    seconds: float


def design_table(components: Components, seconds_per_replicate: float, seconds_per_seed: float,
                 replicates: Iterable[int] = range(2, 21), seeds: Iterable[int] = range(1, 6),
                 units: int | None = None, alpha: float = 0.05, power: float = 0.8) -> list[Design]:
    """Designs (R, S) with their minimum detectable difference and cost, cheapest first. Cost =
    R * (seconds_per_replicate + S * seconds_per_seed): each replicate builds its world and zoo
    once and runs the explainer once per seed."""
    units = components.units if units is None else units
    table = [Design(r, s, units, minimum_detectable_difference(components, r, s, units, alpha, power),
                    r * (seconds_per_replicate + s * seconds_per_seed))
             for r in replicates for s in seeds]
    return sorted(table, key=lambda d: (d.seconds, d.mdd))


def cheapest_design(table: Sequence[Design], max_mdd: float = 0.10) -> Design | None:
    """The cheapest design whose minimum detectable difference is at most max_mdd (None if none)."""
    ok = [d for d in table if d.mdd <= max_mdd]
    return min(ok, key=lambda d: (d.seconds, d.mdd)) if ok else None
