"""Statistics of a replicated benchmark, checked against simulations whose truth is known.

The coverage simulations draw benchmarks from stated variance components (a replicate effect,
explainer-seed noise, unit noise) and count how often the 95% interval holds the true value, the
mean a metric would have over infinitely many replicates of the same design. Run this file as a
script (`python tests/test_stats.py`) to print the full coverage table of docs/statistics.md.
"""
from __future__ import annotations

import functools
import math
import sys
import time

import numpy as np
import pytest
from scipy import stats

from fexbench.core.metrics import Estimate, Metric, nanmean, seed_mean, spearman
from fexbench.core.stats import (Components, Replicated, compare, design_table, cheapest_design, holm, interval,
                                 minimum_detectable_difference, pilot_components, probability_of_improvement,
                                 rank_groups, simulate_mdd, unpaired)

SEEDS = 3  # explainer seeds per replicate in every simulated design

# Mean of a per-unit score: x = mu + replicate + seed + unit + seed-by-unit noise (standard deviations).
MEAN_SETTINGS = {"replicate-heavy": dict(rep=0.10, seed=0.05, unit=0.30, cell=0.10),
                 "unit-heavy": dict(rep=0.02, seed=0.02, unit=0.50, cell=0.20)}
# Spearman of scores = signal * reference + noise, log(signal) = base + replicate + seed effects.
SPEARMAN_SETTINGS = {"moderate": dict(base=math.log(0.8), rep=0.4, seed=0.2),
                     "near-ceiling": dict(base=math.log(3.0), rep=0.5, seed=0.3)}
MU = 0.5


def simulate_mean(rng, datasets, replicates, units, rep, seed, unit, cell):
    shape = (datasets, replicates, SEEDS, units)
    x = (MU + rng.normal(0, rep, shape[:2] + (1, 1)) + rng.normal(0, seed, shape[:3] + (1,))
         + rng.normal(0, unit, shape[:2] + (1, units)) + rng.normal(0, cell, shape))
    return [Replicated(nanmean, tuple((x[d, r],) for r in range(replicates))) for d in range(datasets)], MU


def _spearman_columns(rng, datasets, replicates, seeds, units, base, rep, seed):
    y = rng.normal(size=(datasets, replicates, 1, units))
    signal = np.exp(base + rng.normal(0, rep, (datasets, replicates, 1, 1))
                    + rng.normal(0, seed, (datasets, replicates, seeds, 1)))
    return signal * y + rng.normal(size=(datasets, replicates, seeds, units)), y[:, :, 0, :]


@functools.lru_cache(maxsize=None)
def spearman_truth(units, base, rep, seed, draws=100_000):
    """E[replicate value] by Monte Carlo (one seed suffices: every seed has the same expectation)."""
    x, y = _spearman_columns(np.random.default_rng(12345), draws, 1, 1, units, base, rep, seed)
    return float(np.mean(spearman(x[:, 0, 0], y[:, 0], axis=-1)))


def simulate_spearman(rng, datasets, replicates, units, base, rep, seed):
    x, y = _spearman_columns(rng, datasets, replicates, SEEDS, units, base, rep, seed)
    ests = [Replicated(spearman, tuple((x[d, r], y[d, r]) for r in range(replicates))) for d in range(datasets)]
    return ests, spearman_truth(units, base, rep, seed)


def coverage(statistic, setting, replicates, units, datasets, seed=0, **interval_kw):
    simulate, params = ((simulate_mean, MEAN_SETTINGS[setting]) if statistic == "mean"
                        else (simulate_spearman, SPEARMAN_SETTINGS[setting]))
    ests, truth = simulate(np.random.default_rng(seed), datasets, replicates, units, **params)
    hits = [(iv.low <= truth <= iv.high) for iv in (interval(e, **interval_kw) for e in ests)]
    return float(np.mean(hits))


# Designs the acceptance test covers: small and larger R, few and many units, both statistics.
# A replicate value pinned near the metric's bound with rare bad replicates (near-ceiling Spearman,
# skewness about -2) defeats any interval built from 3-6 replicate values: samples that miss the
# rare low tail give a mean too high and a spread too small. It is kept as a known limitation.
SKEWED = pytest.mark.xfail(strict=True, reason="t interval under-covers strongly skewed replicate values")
COVERAGE_DESIGNS = [("mean", "replicate-heavy", 3, 10), ("mean", "unit-heavy", 6, 45),
                    ("spearman", "moderate", 3, 10), ("spearman", "moderate", 5, 20),
                    pytest.param("spearman", "near-ceiling", 3, 10, marks=SKEWED)]


@pytest.mark.parametrize("statistic,setting,replicates,units", COVERAGE_DESIGNS)
def test_interval_covers_the_true_value_95_percent_of_the_time(statistic, setting, replicates, units):
    # 1000 simulated benchmarks: the coverage estimate's own sd is about 0.7%.
    cov = coverage(statistic, setting, replicates, units, datasets=1000, seed=replicates * 100 + units)
    assert 0.93 <= cov <= 0.97, cov


def test_one_replicate_is_the_unit_bootstrap_of_scipy():
    rng = np.random.default_rng(1)
    y = rng.normal(size=30)
    x = y + rng.normal(scale=1.2, size=30)
    iv = interval(Replicated(spearman, ((x, y),)), n_resamples=5000)
    res = stats.bootstrap((x, y), spearman, paired=True, vectorized=True, n_resamples=5000, method="percentile",
                          random_state=np.random.default_rng(2))
    width = res.confidence_interval.high - res.confidence_interval.low
    assert iv.method == "unit-bootstrap" and iv.value == pytest.approx(spearman(x, y))
    # Monte Carlo error of each end is about 1% of the width with 5000 resamples.
    assert iv.low == pytest.approx(res.confidence_interval.low, abs=0.05 * width)
    assert iv.high == pytest.approx(res.confidence_interval.high, abs=0.05 * width)


def test_a_task_estimates_interval_is_the_one_replicate_interval_of_the_replicated_statistics():
    """One unit-bootstrap implementation: Estimate.value's CI is stats.interval of that replicate."""
    rng = np.random.default_rng(3)
    y = rng.normal(size=25)
    x = y[None] + rng.normal(scale=1.0, size=(4, 25))
    metric = Metric("rho", "d", True, (-1.0, 1.0), "cat", 0.0)
    value = Estimate(metric, spearman, (x, y), n_resamples=700, seed=9).value()
    iv = interval(Replicated(spearman, ((x, y),)), n_resamples=700, seed=9)
    assert (value.ci_low, value.ci_high) == (iv.low, iv.high) and iv.low < value.value < iv.high


def test_several_replicates_give_the_t_interval_of_their_values():
    values = np.array([0.2, 0.5, 0.35, 0.6])
    est = Replicated(nanmean, tuple((np.full(5, v),) for v in values))
    iv = interval(est)
    ref = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high)) and iv.df == 3


def test_from_task_estimates_per_replicate_and_seed():
    rng = np.random.default_rng(10)
    metric = Metric("rho", "test", True, (-1.0, 1.0), "test")
    per_rep = [[Estimate(metric, spearman, (rng.normal(size=n), y)) for _ in range(3)]
               for n, y in ((12, rng.normal(size=12)), (15, rng.normal(size=15)))]
    est = Replicated.of(per_rep)
    expected = [seed_mean(spearman, np.stack([e.columns[0] for e in seeds]), seeds[0].columns[1]) for seeds in per_rep]
    assert est.units == (12, 15) and est.seeds == (3, 3) and est.metric is metric
    assert est.replicate_values() == pytest.approx(expected)


def test_nan_replicates_are_left_out():
    est = Replicated(nanmean, ((np.array([1.0, 2.0]),), (np.array([np.nan, np.nan]),), (np.array([3.0, 3.0]),)))
    assert est.value == pytest.approx(2.25) and interval(est).replicates == 2


def correlated_pair(rng, replicates, units, gap=0.05):
    """Two methods sharing each replicate's effect and each unit's difficulty (positive correlation)."""
    reps_a, reps_b = [], []
    for _ in range(replicates):
        shared = rng.normal(0, 0.3) + rng.normal(0, 1.0, units)
        reps_a.append((MU + gap + shared + rng.normal(0, 0.2, (2, units)),))
        reps_b.append((MU + shared + rng.normal(0, 0.2, (2, units)),))
    return Replicated(nanmean, tuple(reps_a)), Replicated(nanmean, tuple(reps_b))


@pytest.mark.parametrize("replicates", [1, 5])
def test_paired_interval_is_narrower_than_unpaired_on_correlated_methods(replicates):
    a, b = correlated_pair(np.random.default_rng(replicates), replicates, units=30)
    paired, indep = compare(a, b, n_resamples=1000), unpaired(a, b, n_resamples=1000)
    assert paired.difference == pytest.approx(indep.difference)
    assert (paired.high - paired.low) < 0.5 * (indep.high - indep.low)


def test_probability_of_improvement():
    rng = np.random.default_rng(4)
    low = Replicated(nanmean, tuple((rng.normal(0, 0.1, 20),) for _ in range(4)))
    high = Replicated(nanmean, tuple((rng.normal(5, 0.1, 20),) for _ in range(4)))
    c = compare(high, low)
    assert c.prob_improvement == 1.0 and (c.prob_low, c.prob_high) == (1.0, 1.0)
    assert compare(low, high).prob_improvement == 0.0
    same = compare(low, low)
    assert same.prob_improvement == 0.5 and same.difference == 0.0 and same.p_value == 1.0
    # by hand: 1 beats 0 only; 2 ties 2 twice and beats 0; 3 beats all -> (1 + 2 + 3) / 9
    assert probability_of_improvement([1, 2, 3], [2, 2, 0]) == pytest.approx(6 / 9)


def test_mismatched_units_raise_naming_the_replicate():
    a = Replicated(nanmean, ((np.zeros(10),), (np.zeros(12),)))
    b = Replicated(nanmean, ((np.zeros(10),), (np.zeros(11),)))
    with pytest.raises(ValueError, match="replicate 1 has 12 units"):
        compare(a, b)
    with pytest.raises(ValueError, match="same replicates"):
        compare(a, Replicated(nanmean, ((np.zeros(10),),)))


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def planted(rng, means, replicates=5, units=30):
    """Methods with the planted means on shared replicates and units."""
    shared = [rng.normal(0, 0.05) + rng.normal(0, 0.3, units) for _ in range(replicates)]
    return {name: Replicated(nanmean, tuple((m + s + rng.normal(0, 0.1, (2, units)),) for s in shared))
            for name, m in means.items()}


def test_rank_groups_recover_planted_order_and_ties():
    rng = np.random.default_rng(5)
    separated = rank_groups(planted(rng, {"c": 0.2, "a": 0.8, "b": 0.5}))
    assert separated.ranks == {"a": 1, "b": 2, "c": 3}
    assert separated.significant == {("a", "b"), ("a", "c"), ("b", "c")}
    lower_better = rank_groups(planted(rng, {"c": 0.2, "a": 0.8, "b": 0.5}), higher_is_better=False)
    assert lower_better.ranks == {"a": 3, "b": 2, "c": 1}
    tied = rank_groups(planted(rng, {"x": 0.8, "y": 0.8, "z": 0.2}))
    assert tied.ranks == {"x": 1, "y": 1, "z": 3} and ("x", "y") not in tied.significant


def test_rank_groups_accept_precomputed_comparisons():
    ests = planted(np.random.default_rng(6), {"a": 0.8, "b": 0.2})
    comps = {("b", "a"): compare(ests["b"], ests["a"])}
    assert rank_groups({"a": 0.8, "b": 0.2}, comps).ranks == {"a": 1, "b": 2}


@pytest.mark.parametrize("replicates,seeds,units", [(3, 1, 10), (5, 3, 45), (10, 2, 20)])
def test_mdd_closed_form_agrees_with_simulation(replicates, seeds, units):
    comps = Components(replicate=0.003, seed=0.02, unit=0.4, units=units, seeds=seeds, replicates=replicates,
                       observed=math.nan, seed_estimated=True)
    closed = minimum_detectable_difference(comps, replicates, seeds, units)
    assert simulate_mdd(comps, replicates, seeds, units, n_sim=6000) == pytest.approx(closed, rel=0.10)


def test_mdd_approaches_the_normal_formula_with_many_replicates():
    comps = Components(0.01, 0.0, 0.0, 10, 1, 100, math.nan, False)
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(0.01 / 400)
    assert minimum_detectable_difference(comps, 400) == pytest.approx(normal, rel=0.01)
    assert minimum_detectable_difference(comps, 1) == math.inf


def test_pilot_components_recover_known_components():
    # sd: replicate 0.2, seed 0.15, unit 0.5, no seed-by-unit noise -> 0.04, 0.0225, 0.25
    rng = np.random.default_rng(7)
    reps = tuple((MU + rng.normal(0, 0.2) + rng.normal(0, 0.15, (3, 1)) + rng.normal(0, 0.5, 20)[None],)
                 for _ in range(300))
    c = pilot_components(Replicated(nanmean, reps), n_resamples=300)
    assert c.replicate == pytest.approx(0.04, rel=0.3)
    assert c.seed == pytest.approx(0.0225, rel=0.15)
    assert c.unit == pytest.approx(0.25, rel=0.1)
    assert (c.units, c.seeds, c.replicates) == (20, 3, 300)


def test_design_table_and_cheapest_design():
    comps = Components(0.001, 0.01, 0.3, 40, 3, 4, math.nan, True)
    table = design_table(comps, seconds_per_replicate=100, seconds_per_seed=10, replicates=range(2, 30),
                         seeds=range(1, 4))
    assert [d.seconds for d in table] == sorted(d.seconds for d in table)
    best = cheapest_design(table, max_mdd=0.10)
    assert best.mdd <= 0.10
    assert all(d.seconds >= best.seconds for d in table if d.mdd <= 0.10)
    assert cheapest_design(table, max_mdd=1e-6) is None


def test_a_task_of_8_methods_3_metrics_all_pairs_is_fast():
    rng = np.random.default_rng(8)
    warm = Replicated(spearman, ((rng.normal(size=(3, 30)), rng.normal(size=30)),) * 3)
    compare(warm, warm)  # scipy imports parts of scipy.stats on first use; not what is timed
    start = time.perf_counter()
    for metric in range(3):
        ests = {f"m{i}": Replicated(spearman, tuple((rng.normal(size=(3, 30)), rng.normal(size=30))
                                                    for _ in range(5))) for i in range(8)}
        rank_groups(ests, n_resamples=2000)
    assert time.perf_counter() - start < 3.0



# --- clustered units ---------------------------------------------------------------------------
# Units that belong to clusters (the subject models of unit-causes) are explained well or badly
# together; declared clusters are resampled in two stages, clusters then units inside them.

def _old_plan(units, n_resamples, seed):
    """The resampling plan as it was before cluster ids existed, written plainly: the replicate of
    each slot, then per replicate the unit indices of each slot it fills."""
    rng = np.random.default_rng(seed)
    which = rng.integers(len(units), size=(n_resamples, len(units))) if len(units) > 1 else \
        np.zeros((n_resamples, 1), int)
    draws = []
    for r, n in enumerate(units):
        slots = np.flatnonzero(which.ravel() == r)
        draws.append((slots, rng.integers(n, size=(slots.size, n))))
    return which, draws


def _old_slots(est, n_resamples, seed):
    """(B, R) slot values of the old plan, one slot and one explainer seed at a time."""
    which, draws = _old_plan(est.units, n_resamples, seed)
    out = np.full(which.size, np.nan)
    for cols, (slots, idx) in zip(est.replicates, draws):
        for slot, units in zip(slots, idx):
            out[slot] = nanmean([est.statistic(*(c[s, units] for c in cols)) for s in range(cols[0].shape[0])])
    return which, out.reshape(which.shape)


def test_unclustered_replicates_give_the_numbers_of_before_cluster_ids():
    from fexbench.core.stats import _plan, hierarchical_bootstrap, variance_components

    rng = np.random.default_rng(21)
    reps = tuple((rng.normal(size=(3, n)), rng.normal(size=n)) for n in (12, 7, 20))
    a = Replicated(spearman, reps)
    b = Replicated(spearman, tuple((x + rng.normal(size=x.shape), y) for x, y in reps), clusters=(None,) * 3)
    # the same draws, index for index
    which, draws = _old_plan(a.units, 300, 3)
    new_which, per_rep = _plan(a.units, 300, 3, a.cluster_key)
    assert np.array_equal(which, new_which)
    for (slots, idx), (new_slots, groups) in zip(draws, per_rep):
        assert np.array_equal(slots, new_slots) and len(groups) == 1
        assert np.array_equal(groups[0][0], np.arange(slots.size)) and np.array_equal(groups[0][1], idx)
    # the same numbers: the bootstrap, and the power analysis's unit variances from it
    _, slots_a = _old_slots(a, 300, 3)
    _, slots_b = _old_slots(b, 300, 3)
    assert hierarchical_bootstrap(a, 300, 3) == pytest.approx(nanmean(slots_a, axis=1), rel=1e-12)
    diff = slots_a - slots_b
    w = [np.var(diff[which == r], ddof=1) for r in range(3)]
    old = variance_components([x - y for x, y in zip(a.seed_values(), b.seed_values())], w, a.units)
    new = pilot_components(a, b, n_resamples=300, seed=3)
    for name in ("replicate", "seed", "unit", "observed"):
        assert getattr(new, name) == pytest.approx(getattr(old, name), rel=1e-9), name
    # one replicate: the paired comparison and the interval are the old unit bootstrap's
    x = rng.normal(size=(2, 40))
    one_a, one_b = Replicated(nanmean, ((x,),)), Replicated(nanmean, ((x + rng.normal(0.1, 0.3, x.shape),),))
    dist = _old_slots(one_a, 700, 5)[1][:, 0] - _old_slots(one_b, 700, 5)[1][:, 0]
    c = compare(one_a, one_b, n_resamples=700, seed=5)
    assert (c.low, c.high) == pytest.approx(tuple(np.quantile(dist, [0.025, 0.975])), rel=1e-12)
    assert c.p_value == pytest.approx(min(1.0, 2 * min(np.mean(dist <= 0), np.mean(dist >= 0))))
    iv = interval(one_a, n_resamples=700, seed=5)
    assert (iv.low, iv.high) == pytest.approx(
        tuple(np.quantile(_old_slots(one_a, 700, 5)[1][:, 0], [0.025, 0.975])), rel=1e-12)


def test_clustered_draws_take_whole_clusters_then_units_inside_them():
    from fexbench.core.stats import _plan, _slot_values

    sizes = [3, 5, 2, 6]
    clusters = np.repeat([7, 2, 9, 4], sizes)  # ids need not be 0..K-1 nor sorted
    rng = np.random.default_rng(22)
    x, y = rng.integers(0, 4, clusters.size).astype(float), rng.normal(size=clusters.size)  # ties in x
    est = Replicated(spearman, ((x, y),), clusters=(clusters,))
    _, [(slots, groups)] = _plan(est.units, 60, 1, est.cluster_key)
    assert sorted(np.concatenate([rows for rows, _ in groups]).tolist()) == list(range(60))
    assert len(groups) > 1  # unequal clusters: resamples of several lengths
    values = _slot_values(est, 60, 1)[:, 0]
    lengths = set()
    for rows, idx in groups:
        for row, units in zip(rows, idx):
            per_cluster = {c: int(np.sum(clusters[units] == c)) for c in np.unique(clusters)}
            # each cluster contributes its size once per time it was drawn, K clusters drawn in all
            assert all(k % size == 0 for k, size in zip(per_cluster.values(), (sizes[1], sizes[3], sizes[0], sizes[2])))
            assert sum(k // size for k, size in zip(per_cluster.values(), (sizes[1], sizes[3], sizes[0], sizes[2]))) == 4
            assert values[slots[row]] == pytest.approx(stats.spearmanr(x[units], y[units])[0])
            lengths.add(units.size)
    assert len(lengths) > 1


def _clustered_pair(rng, sizes, delta=0.1, cluster_sd=0.3, unit_sd=0.3):
    """Two methods on the same clustered units: the difference has a cluster effect (a subject
    one method explains much better than the other) and a unit effect; its true mean is delta."""
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    shared = rng.normal(0, 0.5, len(sizes))[clusters] + rng.normal(0, 0.5, clusters.size)
    diff = delta + rng.normal(0, cluster_sd, len(sizes))[clusters] + rng.normal(0, unit_sd, clusters.size)
    return (MU + shared + diff, MU + shared), clusters


def test_one_replicate_comparison_of_clustered_units_is_wider_and_covers():
    rng = np.random.default_rng(23)
    sizes = rng.integers(8, 25, 15)  # 15 subjects of 8-24 units, about 240 units
    delta, hits, widths = 0.1, {True: [], False: []}, {True: [], False: []}
    for _ in range(200):
        (a, b), clusters = _clustered_pair(rng, sizes, delta)
        for clustered in (True, False):
            ids = (clusters,) if clustered else None
            c = compare(Replicated(nanmean, ((a,),), clusters=ids), Replicated(nanmean, ((b,),), clusters=ids),
                        n_resamples=400, seed=1)
            assert c.method == "unit-bootstrap" and c.difference == pytest.approx(a.mean() - b.mean())
            hits[clustered].append(c.low <= delta <= c.high)
            widths[clustered].append(c.high - c.low)
    assert np.all(np.array(widths[True]) > np.array(widths[False]))
    assert np.mean(hits[True]) >= 0.90, np.mean(hits[True])
    assert np.mean(hits[False]) < 0.75, np.mean(hits[False])


def test_pilot_components_put_the_cluster_spread_into_units():
    # no replicate effect; a strong cluster effect (sd 0.4 over 10 clusters of 12 units): the
    # replicate values vary by about 0.4^2 / 10, which comes from which clusters a replicate has
    rng = np.random.default_rng(24)
    clusters = np.repeat(np.arange(10), 12)
    reps = tuple((MU + rng.normal(0, 0.4, 10)[clusters] + rng.normal(0, 0.3, (2, clusters.size)),)
                 for _ in range(150))
    declared = pilot_components(Replicated(nanmean, reps, clusters=(clusters,) * 150), n_resamples=300)
    independent = pilot_components(Replicated(nanmean, reps), n_resamples=300)
    assert declared.observed == independent.observed == pytest.approx(0.4 ** 2 / 10 + 0.09 / 240, rel=0.25)
    assert declared.replicate < 0.2 * declared.observed  # the cluster spread is in `unit`...
    assert independent.replicate > 0.7 * independent.observed  # ...not, as with independent units, in `replicate`
    assert declared.unit / 120 == pytest.approx(0.4 ** 2 / 10, rel=0.25)
    assert declared.unit > 5 * independent.unit


def test_comparisons_refuse_other_cluster_ids_naming_the_replicate():
    columns = ((np.zeros(6),), (np.arange(6.0),))
    a = Replicated(nanmean, columns, clusters=(None, [0, 0, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match="replicate 1 has different cluster ids"):
        compare(a, Replicated(nanmean, columns, clusters=(None, [0, 0, 1, 1, 2, 3])))
    with pytest.raises(ValueError, match="replicate 1 has cluster ids in the first only"):
        compare(a, Replicated(nanmean, columns))
    with pytest.raises(ValueError, match="replicate 1 has cluster ids in the first only"):
        pilot_components(a, Replicated(nanmean, columns))
    assert compare(a, Replicated(nanmean, columns, clusters=(None, np.array([0, 0, 1, 1, 2, 2])))).difference == 0
    with pytest.raises(ValueError, match="replicate 0: cluster ids must be one per unit"):
        Replicated(nanmean, columns, clusters=([0, 1], None))
    with pytest.raises(ValueError, match="replicate 1: cluster ids must be integers"):
        Replicated(nanmean, columns, clusters=(None, [0, 0.5, 1, 1, 2, 2]))
    with pytest.raises(ValueError, match="one entry .* per replicate"):
        Replicated(nanmean, columns, clusters=(None,))


def main(datasets=2000, percentile_datasets=400, percentile_resamples=1000):
    """Print the coverage table of docs/statistics.md."""
    print(f"coverage of the 95% interval, {datasets} simulated benchmarks per design, {SEEDS} seeds")
    print("statistic | setting | R | units | t interval | plain percentile hierarchical bootstrap")
    for statistic, settings in (("mean", MEAN_SETTINGS), ("spearman", SPEARMAN_SETTINGS)):
        for setting in settings:
            for replicates in (3, 4, 5, 6):
                for units in (10, 20, 45):
                    start = time.perf_counter()
                    cov = coverage(statistic, setting, replicates, units, datasets, seed=1000 + replicates * 100 + units)
                    row = f"{statistic} | {setting} | {replicates} | {units} | {100 * cov:.1f}%"
                    if replicates in (3, 6) and units in (10, 45):
                        pct = coverage(statistic, setting, replicates, units, percentile_datasets,
                                       seed=2000 + replicates * 100 + units, method="percentile",
                                       n_resamples=percentile_resamples)
                        row += f" | {100 * pct:.1f}%"
                    else:
                        row += " |"
                    print(row + f"   ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
