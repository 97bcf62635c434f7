"""Replicates as a dimension of a run: one replicate is a plain run, several pool into a value whose
interval states the benchmark's uncertainty; per-unit values survive the result file, so rank
groups and paired comparisons can be recomputed from it."""
from __future__ import annotations

import numpy as np
import pytest

from fexbench.core import stats
from fexbench.core.contract import Environment
from fexbench.core.results import read_result, result_path
from fexbench.analysis.comparisons import compare_results, rank_task, replicated
from fexbench.harness.driver import run

TASK = "waterbirds-spurious"
TINY = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2, n_bootstrap=200)
EXPLAINERS = ["oracle", "random", "class-name"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicates")
    cache = root / "cache"
    one = run([TASK], EXPLAINERS, Environment(cache_dir=cache, out_dir=root / "one", progress=False,
                                              explainer_seeds=3), task_configs={TASK: TINY}, log=lambda s: None)
    three = run([TASK], EXPLAINERS, Environment(cache_dir=cache, out_dir=root / "three", progress=False,
                                                explainer_seeds=3, replicates=3),
                task_configs={TASK: TINY}, log=lambda s: None)
    return root, {r.explainer: r for r in one}, {r.explainer: r for r in three}


def test_replicate_zero_is_the_plain_run(runs):
    _, one, three = runs
    for name in EXPLAINERS:
        rep0 = three[name].replicates[0]
        assert rep0["seed"] == one[name].seed
        assert rep0["hashes"] == one[name].hashes
        for m1, m3 in zip(one[name].metrics, three[name].metrics):
            assert m3.replicate_values[0] == pytest.approx(m1.value, nan_ok=True)


def test_each_replicate_has_its_own_world_zoo_and_explainer_seeds(runs):
    _, _, three = runs
    reps = three["random"].replicates
    assert len(reps) == 3 and len({r["seed"] for r in reps}) == 3
    weights = [{k: v for k, v in r["hashes"].items() if k.startswith("weights:")} for r in reps]
    probes = [r["hashes"]["probe"] for r in reps]
    assert len(set(probes)) == 3
    assert all(set(w.values()).isdisjoint(set(x.values())) for i, w in enumerate(weights) for x in weights[i + 1:])
    seeds = [tuple(r["explainer_seeds"]) for r in reps]
    assert len(set(seeds)) == 3 and all(len(s) == 3 for s in seeds)


def test_the_pooled_value_is_the_mean_of_the_replicates_with_a_t_interval(runs):
    _, _, three = runs
    m = three["random"].metric("spearman_reliance")
    values = np.asarray(m.replicate_values)
    assert m.value == pytest.approx(values.mean())
    half = stats.stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    assert m.ci_low == pytest.approx(max(-1.0, values.mean() - half))
    assert m.ci_high == pytest.approx(min(1.0, values.mean() + half))


def test_unit_values_survive_the_file_and_reproduce_the_metric(runs):
    root, _, three = runs
    for name in EXPLAINERS:
        stored = read_result(result_path(root / "three", TASK, name))
        for m in stored.metrics:
            rebuilt = replicated(stored, m.name)
            assert rebuilt.value == pytest.approx(m.value, nan_ok=True)
            assert len(rebuilt.units) == 3


def test_rank_groups_and_paired_comparisons_come_from_result_files(runs):
    root, _, _ = runs
    results = [read_result(result_path(root / "three", TASK, n)) for n in EXPLAINERS]
    ranking = rank_task(results)
    assert ranking is not None and set(ranking.roles) == set(EXPLAINERS)
    assert ranking.roles["oracle"] == "oracle" and ranking.rank_intervals == {}  # baselines only: no method to rank
    assert set(ranking.oracle_gaps) == set(EXPLAINERS) - {"oracle"}
    by = {r.explainer: r for r in results}
    diff = compare_results(by["oracle"], by["class-name"], "auroc_biased")
    assert diff.difference == pytest.approx(by["oracle"].metric("auroc_biased").value - 0.5)


def test_results_of_other_ground_truth_are_not_compared(runs):
    from fexbench.analysis.comparisons import NotComparable

    root, one, three = runs
    with pytest.raises(NotComparable, match="different ground truth"):
        compare_results(one["oracle"], three["oracle"], "auroc_biased")


def _clustered_scored(rng, clusters, seeds=2):
    """scored[r][s] of a task whose units belong to subjects: clusters[r] holds replicate r's ids."""
    from fexbench.core.contract import Scored
    from fexbench.core.metrics import Estimate, Metric, nanmean, spearman

    hit = Metric("hit", "d", True, (0.0, 1.0), "accuracy")
    rho = Metric("rho", "d", True, (-1.0, 1.0), "faithfulness")
    scored = []
    for r, ids in enumerate(clusters):
        subject = rng.normal(0, 1, ids.max() + 1)[ids]
        runs = []
        for _ in range(seeds):
            hits = (subject + rng.normal(0, 0.5, ids.size) > 0).astype(float)
            x, y = subject + rng.normal(size=ids.size), rng.normal(size=ids.size)
            boot = dict(n_resamples=200, seed=r, clusters=tuple(ids))
            runs.append(Scored.of((Estimate(hit, nanmean, (hits,), **boot), Estimate(rho, spearman, (x, y), **boot)),
                                  {}))
        scored.append(runs)
    return scored


@pytest.mark.parametrize("replicates", [1, 3])
def test_cluster_ids_survive_the_result_file_with_identical_numbers(tmp_path, replicates):
    from fexbench.core.results import JobResult, write_result
    from fexbench.core.results import validate_file
    from fexbench.harness.pooling import pool, replicated_from_result

    rng = np.random.default_rng(replicates)
    clusters = [rng.permutation(np.repeat(np.arange(5), rng.integers(2, 7, 5))) for _ in range(replicates)]
    scored = {"a": _clustered_scored(rng, clusters), "b": _clustered_scored(rng, clusters)}  # the same units
    stored = {}
    for name in scored:
        pooled = pool(scored[name], n_resamples=300, seed=0)
        result = JobResult(task="t", explainer=name, oracle=False, status="ok", job_key="k", seed=0,
                           metrics=pooled.metrics, unit_values=pooled.unit_values)
        path = write_result(tmp_path, result)
        assert validate_file(path) == []
        stored[name] = read_result(path)
        assert stored[name].unit_values["hit"]["clusters"] == [c.tolist() for c in clusters]
    for metric, name in enumerate(("hit", "rho")):
        original = {k: stats.Replicated.of([[s.estimates[metric] for s in r] for r in scored[k]]) for k in scored}
        rebuilt = {k: replicated_from_result(stored[k].unit_values, name) for k in scored}
        assert rebuilt["a"].cluster_key == original["a"].cluster_key == tuple(tuple(c.tolist()) for c in clusters)
        assert np.array_equal(stats.hierarchical_bootstrap(rebuilt["a"], 300, 4),
                              stats.hierarchical_bootstrap(original["a"], 300, 4), equal_nan=True)
        assert stats.compare(rebuilt["a"], rebuilt["b"], 300, 4) == stats.compare(original["a"], original["b"], 300, 4)
        assert stats.pilot_components(rebuilt["a"], rebuilt["b"], 300, 4) == \
            stats.pilot_components(original["a"], original["b"], 300, 4)
        if replicates == 1:  # the pooled interval is the clustered unit bootstrap, recomputed from the file
            iv = stats.interval(rebuilt["a"], n_resamples=200, seed=0)
            m = stored["a"].metric(name)
            assert iv.method == "unit-bootstrap" and (m.ci_low, m.ci_high) == (iv.low, iv.high)


def test_unit_values_without_cluster_ids_keep_their_layout():
    from fexbench.core.contract import Scored
    from fexbench.core.metrics import Estimate, Metric, nanmean
    from fexbench.harness.pooling import pool, replicated_from_result

    m = Metric("hit", "d", True, (0.0, 1.0), "accuracy")
    scored = [[Scored.of((Estimate(m, nanmean, (np.arange(4.0) / 4,)),), {})] for _ in range(2)]
    unit_values = pool(scored, n_resamples=50).unit_values
    assert unit_values == {"hit": {"statistic": "fexbench.core.metrics:nanmean",
                                   "replicates": [[[[0.0, 0.25, 0.5, 0.75]]]] * 2}}
    assert replicated_from_result(unit_values, "hit").cluster_key == (None, None)
