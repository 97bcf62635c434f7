"""Rank-group stability: the projection ranks with the leaderboard's own rule, recovers a planted
model, and tells separated, tied and borderline methods apart; `fexbench power` prints it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fexbench.analysis import stability
from fexbench.core import stats
from fexbench.core.metrics import nanmean
from fexbench.analysis.stability import JointModel, rankings_agree


def _replicated(values: np.ndarray) -> dict[str, stats.Replicated]:
    """Methods scored on the same units: values (R, E, n) -> name -> Replicated of the unit mean."""
    r, e, n = values.shape
    return {f"m{j}": stats.Replicated(nanmean, tuple((values[i, j],) for i in range(r))) for j in range(e)}


def _model(means, sd=0.01, within=None) -> JointModel:
    e = len(means)
    return JointModel(tuple(f"m{j}" for j in range(e)), np.asarray(means, float),
                      np.eye(e) * sd ** 2 if within is None else within, np.zeros((e, e)), 3)


@pytest.mark.parametrize("a, b, same, near", [
    ([1, 1, 3], [1, 1, 3], True, True),
    ([1, 2, 3], [1, 1, 3], False, True),   # m1 moved to the neighbouring group
    ([1, 2, 3], [1, 3, 3], False, True),   # m1 moved down to the neighbouring group
    ([1, 2, 3], [1, 4, 3], False, False),  # m1 jumped past m2's group
    ([1, 2, 3], [2, 1, 3], False, False),  # two methods changed
])
def test_rankings_agree(a, b, same, near):
    assert rankings_agree(a, b) == (same, near)


def test_simulated_rankings_use_the_leaderboards_rule():
    """Every simulated benchmark, ranked by rank_groups on Replicated values, gives the same ranks."""
    model = _model([0.5, 0.52, 0.6, 0.9], within=np.full((4, 4), 0.0004) + np.eye(4) * 0.002)
    ranks, separated = stability.simulate_rankings(model, 4, n_sim=30, seed=3)
    rng = np.random.default_rng(3)
    draws = rng.multivariate_normal(model.mean, model.covariance, size=(30, 4), method="eigh")
    for k in range(30):
        values = {n: stats.Replicated(nanmean, tuple((np.array([draws[k, r, j]]),) for r in range(4)))
                  for j, n in enumerate(model.names)}
        found = stats.rank_groups(values, n_resamples=50)
        assert [found.ranks[n] for n in model.names] == ranks[k].tolist()
        assert len(found.significant) == separated[k]


def test_separated_methods_are_stable_and_tied_methods_stay_tied():
    far = stability.rank_stability(_model([0.1, 0.5, 0.9]), 3, n_sim=200)
    assert far.same > 0.95 and far.separated == pytest.approx(3, abs=0.1)
    tied = stability.rank_stability(_model([0.5, 0.5, 0.5], sd=0.1), 3, n_sim=400)
    assert tied.separated < 0.1  # Holm keeps false separations rare
    assert tied.same > 0.85 and tied.near > 0.95  # each run falsely separates a pair at most ~5% of the time


def test_a_borderline_pair_unsettles_the_groups_until_replicates_resolve_it():
    """Two methods a little apart: separated in some runs only at R=3, reliably at R=20."""
    model = _model([0.5, 0.56], sd=0.03)
    few, many = (stability.rank_stability(model, r, n_sim=400) for r in (3, 20))
    assert few.same < 0.8
    assert many.same > few.same + 0.15
    assert many.separated > few.separated


def test_joint_model_recovers_the_planted_noise():
    """Replicate effect shared by the methods (sd 0.05) plus unit noise (sd 0.3 over 40 units):
    within ~ 0.3^2/40 on the diagonal, covariance of the differences ~ 2 * within."""
    rng = np.random.default_rng(0)
    reps, e, n = 30, 3, 40
    values = np.empty((reps, e, n))
    for r in range(reps):
        shift = rng.normal(0, 0.05)
        unit = rng.normal(0, 0.3, (e, n))
        values[r] = np.array([0.2, 0.5, 0.8])[:, None] + shift + unit
    model = stability.joint_model(_replicated(values), n_resamples=400)
    assert model.replicates == reps
    assert np.diag(model.within) == pytest.approx([0.09 / n] * 3, rel=0.25)
    assert abs(model.within[0, 1]) < 0.3 * model.within[0, 0]  # independent unit noise
    assert model.between[0, 1] == pytest.approx(0.0025, abs=0.002)  # the shared replicate effect
    assert model.mean == pytest.approx([0.2, 0.5, 0.8], abs=0.03)


def test_joint_model_keeps_the_pairing_of_shared_units():
    """Methods whose unit scores move together: their within-replicate covariance is positive, so a
    small difference is resolved (the paired comparison), which independent noise would not."""
    rng = np.random.default_rng(1)
    base = rng.normal(0, 0.5, (3, 1, 60))
    values = np.concatenate([base + 0.5, base + 0.55 + rng.normal(0, 0.01, (3, 1, 60))], axis=1)
    model = stability.joint_model(_replicated(values), n_resamples=300)
    corr = model.within[0, 1] / math.sqrt(model.within[0, 0] * model.within[1, 1])
    assert corr > 0.95
    paired = stability.rank_stability(model, 3, n_sim=200)
    unpaired = JointModel(model.names, model.mean, np.diag(np.diag(model.within)), model.between, 3)
    assert paired.separated > stability.rank_stability(unpaired, 3, n_sim=200).separated + 0.5


def test_joint_model_refuses_undefined_values_and_single_methods():
    values = _replicated(np.random.default_rng(2).normal(size=(3, 2, 5)))
    with pytest.raises(ValueError, match="two or more"):
        stability.joint_model({"m0": values["m0"]})
    nan = np.random.default_rng(2).normal(size=(3, 2, 5))
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="m1"):
        stability.joint_model(_replicated(nan))


def test_first_stable_takes_the_smallest_design_that_reaches_the_target():
    curve = [stability.Stability(r, 0.0, near, 1.0, 3, 10) for r, near in ((3, 0.5), (5, 0.85), (4, 0.9))]
    assert stability.first_stable(curve, 0.8).replicates == 4
    assert stability.first_stable(curve, 0.95) is None


def test_power_prints_rank_stability_for_a_replicated_run(tmp_path, capsys, toy_methods):
    """End to end on a tiny replicated run of the baselines and two toy compared methods."""
    from fexbench.core.contract import Environment
    from fexbench import cli
    from fexbench.report.leaderboard import markdown
    from fexbench.harness.driver import run

    tiny = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2, n_bootstrap=100)
    out = tmp_path / "pilot"
    results = run(["waterbirds-spurious"], ["oracle", "random", "class-name", *toy_methods],
                  Environment(cache_dir=tmp_path / "cache", out_dir=out, progress=False, replicates=3),
                  task_configs={"waterbirds-spurious": tiny}, log=lambda s: None)
    note = next(line for line in markdown(results).splitlines() if line.startswith("What 3 replicates resolve"))
    assert "identical rank groups with a projected chance of" in note
    assert cli.main(["power", str(out), "--stability-sims", "40", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["waterbirds-spurious"]["rank_stability"]
    assert sorted(summary["explainers"]) == sorted(toy_methods)  # the board ranks the compared methods only
    assert [s["replicates"] for s in summary["curve"]][:3] == [3, 4, 5]
    assert all(0 <= s["same"] <= s["near"] <= 1 for s in summary["curve"])
    assert cli.main(["power", str(out), "--stability-sims", "40"]) == 0
    text = capsys.readouterr().out
    assert "projected chance that a re-run gives the same groups" in text and "3 (pilot, design)" in text
    assert cli.main(["power", str(out), "--stability-target", "1.5"]) == 2
    assert "--stability-target" in capsys.readouterr().err


def test_the_projection_does_not_depend_on_the_order_of_the_methods():
    """The summary's note and `fexbench power` read the same results in different orders."""
    rng = np.random.default_rng(5)
    values = _replicated(rng.normal([[0.2], [0.25], [0.6]], 0.2, size=(3, 3, 30)))
    reordered = dict(reversed(list(values.items())))
    a, b = (stability.rank_stability(stability.joint_model(v, n_resamples=200), 3, n_sim=100) for v in (values, reordered))
    assert a == b


def test_between_replicate_covariance_is_psd_without_upward_bias():
    """Clipping a noisy covariance difference's negative eigenvalues to 0 inflates it; the model
    keeps the difference's trace (an unbiased total) while making it positive semi-definite."""
    import numpy as np
    from fexbench.analysis.stability import _psd
    diff = np.array([[0.02, 0.0], [0.0, -0.01]])
    fixed = _psd(diff)
    assert np.linalg.eigvalsh(fixed).min() >= -1e-12
    assert np.trace(fixed) == pytest.approx(0.01)  # clipping alone would give 0.02
    assert np.allclose(_psd(np.diag([-0.01, -0.02])), 0.0)
