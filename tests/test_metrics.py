"""Metrics on hand-computed cases, and bootstrap CIs that behave."""
import math

import numpy as np
import pytest

from bench.metrics import auroc, bootstrap_ci, nanmean, spearman


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
