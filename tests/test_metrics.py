"""Metrics on hand-computed cases, and bootstrap CIs that behave."""
import math

import numpy as np
import pytest

from fexbench.core.metrics import (Estimate, Metric, auroc, finite_count, nanmean, pool_seeds, seed_mean,
                           spearman)


def bootstrap_ci(statistic, *columns, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The one-replicate unit bootstrap, as every Estimate gets it (fexbench.core.stats.interval)."""
    from fexbench.core import stats

    found = stats.interval(stats.Replicated(statistic, (columns,)), n_resamples=n_resamples, seed=seed)
    return found.low, found.high


def test_spearman_hand_computed():
    # ranks x: 1 2 3 4, ranks y: 1 3 2 4 -> d^2 = 0+1+1+0 = 2 -> rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4], [1, 5, 3, 9]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_constant_scores_mean_no_information():
    assert spearman([0.0, 0.0, 0.0], [0.1, 0.5, 0.9]) == 0.0


def test_auroc_hand_computed():
    # positives scored 0.8, 0.4; negatives 0.5, 0.1 -> pairs won: (0.8>0.5),(0.8>0.1),(0.4>0.1) = 3/4
    assert auroc([0.8, 0.4, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.75)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_nanmean_skips_undefined_rows():
    assert nanmean([1.0, float("nan"), 0.0]) == pytest.approx(0.5)
    assert math.isnan(nanmean([float("nan")]))


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(scale=0.5, size=40)
    lo, hi = bootstrap_ci(spearman, x, y, n_resamples=300, seed=1)
    assert lo <= spearman(x, y) <= hi and hi - lo > 0.01
    assert (lo, hi) == bootstrap_ci(spearman, x, y, n_resamples=300, seed=1)


def test_bootstrap_ci_of_unrelated_scores_covers_zero():
    rng = np.random.default_rng(3)
    lo, hi = bootstrap_ci(spearman, rng.random(30), rng.random(30), n_resamples=300)
    assert lo < 0 < hi


def test_bootstrap_ci_drops_undefined_resamples():
    # AUROC is undefined in resamples with one class; the CI still comes from the defined ones
    lo, hi = bootstrap_ci(auroc, [0.9, 0.8, 0.2, 0.1, 0.7, 0.3], [1, 1, 0, 0, 1, 0], n_resamples=200)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_batched_statistics_agree_with_reference_implementations():
    from scipy import stats as st
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = rng.integers(0, 5, 12).astype(float)  # ties on purpose
        y = rng.random(12)
        b = rng.random(12) > 0.5
        if b.any() and not b.all():
            assert auroc(x, b) == pytest.approx(roc_auc_score(b, x))
        if np.ptp(x) > 0:
            assert spearman(x, y) == pytest.approx(st.spearmanr(x, y).statistic)
    batch_x, batch_b = rng.random((5, 12)), rng.random((5, 12)) > 0.5
    batch_b[:, 0], batch_b[:, 1] = True, False
    assert np.allclose(auroc(batch_x, batch_b), [roc_auc_score(bb, xx) for xx, bb in zip(batch_x, batch_b)])


# -- pooling explainer seeds ---------------------------------------------------------------------------
RELIANCE = np.array([0.01, 0.02, 0.17, 0.13, 0.32, 0.15, 0.68, 0.86, 0.92, 0.95])
SPEAR = Metric("rho", "Spearman", True, (-1.0, 1.0), "toy", 0.0)


def test_one_seed_as_a_row_gives_the_plain_interval():
    x = np.random.default_rng(0).random(10)
    assert bootstrap_ci(spearman, x[None, :], RELIANCE, seed=1) == bootstrap_ci(spearman, x, RELIANCE, seed=1)
    # identical seeds average to the same statistic, so the interval is the one-seed interval
    assert bootstrap_ci(spearman, np.tile(x, (3, 1)), RELIANCE, seed=1) == pytest.approx(
        bootstrap_ci(spearman, x, RELIANCE, seed=1))
    assert seed_mean(spearman, np.stack([x, -x]), RELIANCE) == pytest.approx(0.0)  # rho and -rho


def test_pooled_estimate_is_the_mean_of_the_seeds_with_a_joint_bootstrap():
    rng = np.random.default_rng(7)
    per_seed = [Estimate(SPEAR, spearman, (rng.random(10), RELIANCE), n_resamples=500) for _ in range(20)]
    singles = [e.value() for e in per_seed]
    pooled = Estimate.pooled(per_seed)
    assert pooled.seed_values == pytest.approx([s.value for s in singles])
    assert pooled.value == pytest.approx(np.mean([s.value for s in singles]))
    assert pooled.n == 10 and pooled.ci_low <= pooled.value <= pooled.ci_high
    # averaging independent draws shrinks the interval about as 1/sqrt(20)
    single_width = np.mean([s.ci_high - s.ci_low for s in singles])
    assert pooled.ci_high - pooled.ci_low < single_width / 2.5


def test_random_scores_pooled_over_seeds_sit_at_chance():
    """A control with no information: over 20 seeds its Spearman is within Monte Carlo error of 0
    (sd 1/sqrt(9)/sqrt(20) = 0.075) and its interval covers 0, in 95 of 100 simulated controls."""
    rng = np.random.default_rng(11)
    covered, values = 0, []
    for _ in range(100):
        pooled = Estimate.pooled([Estimate(SPEAR, spearman, (rng.random(10), RELIANCE), n_resamples=300)
                                  for _ in range(20)])
        covered += pooled.ci_low <= 0.0 <= pooled.ci_high
        values.append(pooled.value)
    assert abs(np.mean(values)) < 0.03 and 0.05 < np.std(values) < 0.11
    assert covered >= 88  # nominal 95%


def test_pool_seeds_uses_estimates_and_falls_back_to_a_plain_mean():
    rows = [np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, np.nan])]
    metric = Metric("hit", "hit rate", True, (0.0, 1.0), "toy", 0.0)
    estimates = [[Estimate(metric, nanmean, (r,), count=finite_count)] for r in rows]
    values = [tuple(e.value() for e in seed) for seed in estimates]
    pooled, = pool_seeds(values, estimates)
    assert pooled.value == pytest.approx((0.75 + 1 / 3) / 2) and pooled.n == 4 and np.isfinite(pooled.ci_low)
    plain, = pool_seeds(values, [[], []])
    assert plain.value == pooled.value and np.isnan(plain.ci_low) and plain.seed_values == pooled.seed_values
    with pytest.raises(ValueError, match="same units"):
        Estimate.pooled([estimates[0][0], Estimate(metric, nanmean, (np.ones(3),))])
