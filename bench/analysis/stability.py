"""How likely a task's rank groups are to come out the same when the whole benchmark is run again.

A leaderboard's rank groups (fexbench.core.stats.rank_groups: paired t over replicates, Holm over
all pairs, rank = 1 + the number of methods significantly better) are only worth publishing if a
re-run with new worlds, zoos and explainer seeds would give the same groups. Whether it does
depends on the design (how many replicates) and on how far apart the methods really are: a pair
whose true difference sits near the test's detection limit is separated in some runs and not in
others, and every such pair can move a method between groups.

This module projects that from a pilot run. One replicate's values of all methods of a task are
modelled as jointly normal:

- mean: the pilot's value of each method (a plug-in: the projection answers "if the methods were
  as far apart as the pilot says");
- covariance = within + between. *Within* is the noise of a replicate's value from which units it
  happens to have: the covariance, over the hierarchical bootstrap's draws of each replicate, of
  the methods' values. The draws are the same units for every method (that is what makes the
  comparisons paired), so the covariance carries the pairing; it is scaled by k/(k-1) for the k
  items the bootstrap resamples (units, or clusters when units carry cluster ids), as
  `stats.pilot_components` does. *Between* is what the replicates' spread adds beyond that: the
  pilot's covariance of replicate values minus the within part, made positive semi-definite with its
  trace kept (`_psd`: clipping alone would bias it upward; with few pilot replicates it is a rough
  estimate).

Two independent benchmarks of R replicates are drawn from the model, each ranked with the rule of
`stats.ranks_from_tests` after the paired t-test of `stats.compare`, and compared. Two figures:
`same` (identical ranks for every method) and `near` (identical, or one method alone moved to the
neighbouring group: the other methods keep their ranks and none of them sits strictly between the
moved method's two ranks), the criterion of the replication issue. The projection is checked
against the agreement of disjoint sets of real replicates in docs/statistics.md.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from fexbench.core import stats
from fexbench.core.lazymodule import lazy_module

scipy_stats = lazy_module("scipy.stats")

__all__ = ["JointModel", "Stability", "joint_model", "simulate_rankings", "rank_stability",
           "rankings_agree", "stability_curve", "first_stable",
           "ranks_from_values"]


@dataclass(frozen=True)
class JointModel:
    """The joint normal model of one replicate's values of every method of one task."""
    names: tuple[str, ...]
    mean: np.ndarray  # (E,) the pilot's values
    within: np.ndarray  # (E, E) unit noise of one replicate's values
    between: np.ndarray  # (E, E) what the replicates' spread adds (positive semi-definite)
    replicates: int  # the pilot's replicates

    @property
    def covariance(self) -> np.ndarray:
        return self.within + self.between


@dataclass(frozen=True)
class Stability:
    replicates: int
    same: float  # P(two runs give identical ranks)
    near: float  # P(identical, or one method moved to the neighbouring group)
    separated: float  # mean number of pairs a run separates (a design that separates none is stable and useless)
    pairs: int  # pairs compared
    n_sim: int


def _psd(matrix: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrix (negative eigenvalues set to 0), rescaled so that
    its trace is the input's trace floored at 0. Clipping alone biases a noisy difference of
    covariances upward (every negative direction becomes 0, every positive one is kept); the trace
    is linear, so the input's trace is an unbiased estimate of the true total, and the rescaling
    keeps that total while the shape stays positive semi-definite."""
    sym = (matrix + matrix.T) / 2
    values, vectors = np.linalg.eigh(sym)
    clipped = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    kept, total = float(np.trace(clipped)), max(0.0, float(np.trace(sym)))
    return clipped * (total / kept) if kept > 0 else clipped


def joint_model(values: Mapping[str, stats.Replicated], n_resamples: int = 1000, seed: int = 0) -> JointModel:
    """The model from a pilot: every method's Replicated on the same replicates and units.

    Methods whose value is undefined in any replicate are refused (ValueError naming them): the
    model needs every method in every replicate."""
    names = tuple(sorted(values))  # the same simulated draws whatever order the methods come in
    if len(names) < 2:
        raise ValueError("rank stability needs two or more methods")
    first = values[names[0]]
    for name in names[1:]:
        stats._check_same_units(first, values[name])
    reps = np.stack([values[n].replicate_values() for n in names], axis=1)  # (R, E)
    bad = [n for n, col in zip(names, reps.T) if not np.all(np.isfinite(col))]
    if bad:
        raise ValueError(f"rank stability: undefined replicate values for {', '.join(bad)}")
    within = []
    for r, n in enumerate(first.units):
        keep = np.arange(len(first.units)) == r  # replicate r alone: its unit (or cluster) bootstrap
        drawn = np.stack([stats._slot_values(stats._subset(values[m], keep), n_resamples, seed)[:, 0]
                          for m in names], axis=1)  # (B, E), the same draws for every method
        drawn = drawn[np.all(np.isfinite(drawn), axis=1)]
        # the bootstrap's variance is short by (k-1)/k for k resampled items: units, or the clusters
        # when the units carry cluster ids (as stats.pilot_components corrects it)
        ids = first.cluster_key[r]
        k = len(set(ids)) if ids is not None else n
        if drawn.shape[0] > 2 and k >= 2:
            within.append(np.cov(drawn, rowvar=False) * k / (k - 1))
    if not within:
        raise ValueError("rank stability: no replicate with two or more units to measure the unit noise")
    w = np.mean(within, axis=0)
    between = _psd(np.cov(reps, rowvar=False) - w) if reps.shape[0] >= 2 else np.zeros_like(w)
    return JointModel(names, reps.mean(axis=0), w, between, int(reps.shape[0]))


def _p_values(draws: np.ndarray, pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Paired t-test of every pair over the replicates of each simulated benchmark, as
    `stats._t_test` does: draws (n, R, E) -> differences and two-sided p-values, each (n, pairs)."""
    i, j = (np.array(x) for x in zip(*pairs))
    d = draws[:, :, i] - draws[:, :, j]  # (n, R, P)
    r = d.shape[1]
    mean = d.mean(axis=1)
    se = d.std(axis=1, ddof=1) / math.sqrt(r)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * scipy_stats.t.sf(np.abs(mean / se), r - 1)
    p = np.where(se == 0, np.where(mean == 0, 1.0, 0.0), p)
    return mean, p


def ranks_from_values(values: np.ndarray, names: Sequence[str], higher_is_better: bool = True,
                      alpha: float = 0.05) -> np.ndarray:
    """Rank vector of one benchmark from its replicate values (R, E), with the rule of
    `stats.rank_groups` for two or more replicates (paired t over replicates, Holm)."""
    pairs = list(itertools.combinations(range(len(names)), 2))
    diffs, ps = _p_values(np.asarray(values, float)[None], pairs)
    ranks, _, _ = stats.ranks_from_tests(list(names), [(names[a], names[b]) for a, b in pairs], diffs[0], ps[0],
                                         higher_is_better, alpha)
    return np.array([ranks[n] for n in names])


def simulate_rankings(model: JointModel, replicates: int, higher_is_better: bool = True, n_sim: int = 500,
                      seed: int = 0, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Rank vectors (n_sim, E) of benchmarks of `replicates` replicates drawn from the model, and
    the number of pairs each separated (n_sim,)."""
    if replicates < 2:
        raise ValueError("rank groups over replicates need two or more replicates")
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(model.mean, model.covariance, size=(n_sim, replicates), method="eigh")
    pairs = list(itertools.combinations(range(len(model.names)), 2))
    named = [(model.names[a], model.names[b]) for a, b in pairs]
    diffs, ps = _p_values(draws, pairs)
    out = np.empty((n_sim, len(model.names)), int)
    separated = np.empty(n_sim, int)
    for k in range(n_sim):
        ranks, significant, _ = stats.ranks_from_tests(model.names, named, diffs[k], ps[k], higher_is_better, alpha)
        out[k] = [ranks[n] for n in model.names]
        separated[k] = len(significant)
    return out, separated


def rankings_agree(a: Sequence[int], b: Sequence[int]) -> tuple[bool, bool]:
    """(same, near) of two rank vectors of the same methods: identical; or identical but for one
    method whose two ranks have no other method's rank strictly between them."""
    a, b = np.asarray(a), np.asarray(b)
    differ = np.flatnonzero(a != b)
    if differ.size == 0:
        return True, True
    if differ.size > 1:
        return False, False
    m = differ[0]
    low, high = sorted((a[m], b[m]))
    others = np.delete(a, m)
    return False, not bool(np.any((others > low) & (others < high)))


def rank_stability(model: JointModel, replicates: int, higher_is_better: bool = True, n_sim: int = 500,
                   seed: int = 0, alpha: float = 0.05) -> Stability:
    """P(same) and P(near) of two independent benchmarks of `replicates` replicates."""
    first, sep_first = simulate_rankings(model, replicates, higher_is_better, n_sim, seed, alpha)
    second, sep_second = simulate_rankings(model, replicates, higher_is_better, n_sim, seed + 1, alpha)
    agree = np.array([rankings_agree(x, y) for x, y in zip(first, second)])
    e = len(model.names)
    return Stability(replicates, float(agree[:, 0].mean()), float(agree[:, 1].mean()),
                     float(np.concatenate([sep_first, sep_second]).mean()), e * (e - 1) // 2, n_sim)


def stability_curve(model: JointModel, candidates: Sequence[int] = (3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 40),
                    higher_is_better: bool = True, n_sim: int = 500, seed: int = 0,
                    alpha: float = 0.05) -> list[Stability]:
    """`rank_stability` of every candidate design. Stability is not monotone in R: more replicates
    separate more pairs, and a pair near the edge of separation unsettles the groups. Nor is it
    enough alone: with 2 replicates (t quantile 12.7) almost nothing is separated, so the groups
    are stable and say nothing; read it with `separated`. The default candidates start at 3."""
    return [rank_stability(model, r, higher_is_better, n_sim, seed, alpha) for r in candidates]


def first_stable(curve: Sequence[Stability], target: float = 0.8) -> Stability | None:
    """The smallest design of a curve whose P(near) reaches `target`, or None."""
    return next((s for s in sorted(curve, key=lambda s: s.replicates) if s.near >= target), None)
