"""`fexbench agreement`: the replication check over independent runs, as a command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fexbench.analysis import stability
from fexbench.core import stats
from fexbench.core.contract import Environment
from fexbench.core.metrics import nanmean
from fexbench.core.results import read_results_dir
from fexbench import cli
from fexbench.analysis.comparisons import rank_task
from fexbench.harness.driver import run

TASK = "waterbirds-spurious"
TINY = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2, n_bootstrap=100)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, toy_methods):
    root = tmp_path_factory.mktemp("agreement")
    folders = []
    for seed in (0, 1):
        out = root / f"seed{seed}"
        run([TASK], ["oracle", "random", "class-name", *toy_methods],
            Environment(cache_dir=root / "cache", out_dir=out, progress=False, replicates=2, seed=seed),
            task_configs={TASK: TINY}, log=lambda s: None)
        folders.append(out)
    return folders


def test_agreement_reports_each_runs_groups_coverage_and_pooled_splits(two_runs, capsys):
    status = cli.main(["agreement", *map(str, two_runs), "--json"])
    summary = json.loads(capsys.readouterr().out)
    task = summary["tasks"][TASK]
    for k, folder in enumerate(two_runs):  # each run's groups are its own board's groups
        results, _ = read_results_dir(folder)
        assert task["ranks"][k] == dict(rank_task(results).ranks)
    assert task["cells"] == 2 * 2  # each run's value against the other run's interval, per compared method
    assert 0 <= task["covered"] <= task["cells"]
    assert len(task["pairs"]) == 1
    same, near = stability.rankings_agree(*[[r[m] for m in sorted(r)] for r in task["ranks"]])
    assert task["pairs"][0] == {"runs": [0, 1], "same": same, "near": near}
    splits = task["splits"]  # 4 pooled replicates: 3 ways to split them into two sets of 2
    assert splits["pooled_replicates"] == 4 and splits["pairs_of_sets"] == 3
    assert (status == 0) == summary["replicates"]
    assert summary["replicates"] == (near and summary["coverage"] >= 0.9)


def test_the_same_run_twice_is_refused(two_runs, capsys):
    assert cli.main(["agreement", str(two_runs[0]), str(two_runs[0])]) == 2
    assert "share ground truth" in capsys.readouterr().err


def test_ranks_from_values_is_the_boards_rule():
    rng = np.random.default_rng(4)
    names = ["a", "b", "c", "d"]
    for _ in range(20):
        values = rng.normal([0.2, 0.25, 0.5, 0.9], 0.05, size=(4, 4))
        reps = {n: stats.Replicated(nanmean, tuple((np.array([values[r, j]]),) for r in range(4)))
                for j, n in enumerate(names)}
        board = stats.rank_groups(reps, higher_is_better=False, n_resamples=50).ranks
        assert stability.ranks_from_values(values, names, higher_is_better=False).tolist() == [board[n] for n in names]


def test_power_pools_independent_runs_into_one_pilot(two_runs, tmp_path, capsys, toy_methods):
    assert cli.main(["power", *map(str, two_runs), "--stability-sims", "20", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)[TASK]
    assert summary["pilot_replicates"] == 4  # 2 replicates from each run
    assert "4 (pilot, design)" in [f"{c['replicates']} (pilot, design)" for c in summary["rank_stability"]["curve"]]
    assert cli.main(["power", str(two_runs[0]), str(two_runs[0])]) == 2  # the same run twice
    assert "share ground truth" in capsys.readouterr().err
    other = tmp_path / "other-design"  # another design (more epochs) does not pool
    run([TASK], ["oracle", "random", "class-name", *toy_methods],
        Environment(cache_dir=tmp_path / "cache", out_dir=other, progress=False, replicates=2, seed=2),
        task_configs={TASK: {**TINY, "epochs": 3}}, log=lambda s: None)
    assert cli.main(["power", str(two_runs[0]), str(other)]) == 2
    assert "config.task differs" in capsys.readouterr().err
