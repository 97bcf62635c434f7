"""The waterbirds-spurious task end to end on a tiny zoo: ground truth, scoring, determinism, CLI."""
import json

import numpy as np
import pytest

from fexbench import cli
from fexbench.core.contract import Explanation, Target
from fexbench.core.contract import Environment
from fexbench.harness.driver import run
from fexbench.tasks.waterbirds import WaterbirdsSpurious
from conftest import run_baselines

TINY = dict(rhos=(0.5, 0.9, 0.99), seeds=(0, 1), n_train=1000, n_probe=200, n_test=200, epochs=5, width=8,
            bias_threshold=0.5, n_bootstrap=200)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_baselines(tmp_path_factory.mktemp("wb"), "waterbirds-spurious", TINY)


def test_ground_truth_is_measured_and_spans_reliance(tiny_run):
    env, results = tiny_run
    truth = results["oracle"].ground_truth
    assert len(truth) == 6
    low = [t["flip_rate"] for t in truth.values() if t["rho"] == 0.5]
    high = [t["flip_rate"] for t in truth.values() if t["rho"] == 0.99]
    assert max(low) < 0.4 and min(high) > 0.8
    for t in truth.values():
        assert t["worst_group_acc"] <= t["avg_acc"] and t["acc_gap"] == pytest.approx(t["avg_acc"] - t["worst_group_acc"])
        assert len(t["group_acc"]) == 4


def test_oracle_detects_bias_and_baselines_do_not(tiny_run):
    _, results = tiny_run
    assert all(r.status == "ok" for r in results.values())
    assert results["oracle"].metric("auroc_biased").value >= 0.9
    assert results["oracle"].metric("spearman_reliance").value >= 0.6
    assert results["oracle"].metric("correct_background").value >= 0.9
    assert results["class-name"].metric("spearman_reliance").value == 0.0
    assert results["class-name"].metric("auroc_biased").value == 0.5
    assert np.isnan(results["class-name"].metric("correct_background").value)  # it never names a background


def test_results_record_provenance(tiny_run):
    env, results = tiny_run
    raw = json.loads((env.out_dir / "waterbirds-spurious" / "oracle.json").read_text())
    assert raw["config"]["task"]["rhos"] == [0.5, 0.9, 0.99] and raw["seed"] == 0
    assert {"test", "test_swapped", "probe"} <= set(raw["hashes"])
    assert sum(k.startswith("weights:") for k in raw["hashes"]) == 6
    assert raw["versions"]["torch"] != "not installed" and raw["peak_rss_mb"] > 0
    m = raw["metrics"][0]
    assert {"value", "ci_low", "ci_high", "higher_is_better", "value_range", "n"} <= set(m)


def test_same_seed_same_numbers_in_a_fresh_cache(tiny_run, tmp_path):
    env, results = tiny_run
    again = run(["waterbirds-spurious"], ["oracle", "random"], Environment(tmp_path / "c", tmp_path / "o", progress=False),
                task_configs={"waterbirds-spurious": TINY}, log=lambda s: None)
    for r in again:
        assert r.hashes == results[r.explainer].hashes  # same data and bit-identical weights
        assert [m.value for m in r.metrics] == [m.value for m in results[r.explainer].metrics]


def test_background_score_reads_synonyms_and_groups():
    task = WaterbirdsSpurious(**TINY)

    from fexbench.core.contract import Case, Context, Prepared, Probe, Subject
    probe = Probe(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 1)), np.zeros((1, 2)), "penultimate", ("a",))
    cases = tuple(Case(Subject(n, None, ("angular", "round"), n), Context(probe, ()), ()) for n in ("a", "b"))
    prepared = Prepared(cases, {"a": {"reliance": 0.0, "biased": False}, "b": {"reliance": 1.0, "biased": True}}, {})
    t0, t1 = Target("class", 0, "angular"), Target("class", 1, "round")
    explanations = {
        "a": [Explanation.from_weights(t0, {"triangle": 1.0}), Explanation.from_weights(t1, {"disk": 1.0})],
        # 'trees' lemmatises to the land concept, 'the sea' to water; 'waves' too
        "b": [Explanation.from_weights(t0, {"trees": 3.0, "square": 1.0}), Explanation.from_weights(t1, {"the sea": 1.0, "waves": 1.0})],
    }
    scored = task.score(prepared, explanations)
    per = scored.per_subject
    assert per["a"]["background_score"] == 0.0
    assert per["b"]["background_share_per_class"] == pytest.approx([0.75, 1.0])
    assert per["b"]["correct_background_per_class"] == [1.0, 1.0]
    values = {m.name: m.value for m in scored.metrics}
    assert values["spearman_reliance"] == pytest.approx(1.0) and values["auroc_biased"] == 1.0
    # naming the wrong background for a biased subject is scored as wrong
    explanations["b"][0] = Explanation.from_weights(t0, {"ocean": 1.0})
    assert task.score(prepared, explanations).per_subject["b"]["correct_background_per_class"][0] == 0.0


def test_cli_list_and_user_errors(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "waterbirds-spurious" in out and "spearman_reliance" in out and "oracle" in out and "[oracle]" in out
    assert cli.main(["run", "--tasks", "no-such-task"]) == 2
    assert "unknown task 'no-such-task'" in capsys.readouterr().err
