"""compare: a planted worse explainer (class-name only) fails the gate against a good one; the same
stochastic explainer with other explainer seeds does not (false-alarm rate over 20 pairs). A job
ok in BASE that NEW lacks, errored or holds an invalid file of fails the gate, named, with a
coverage line; two explainers are compared in neutral words; with one replicate P(NEW > BASE) is
computed over units. Those use small result files written here (`_job`, `_write`), no training."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from fexbench.core import registry
from fexbench.cli import main
from fexbench.analysis.compare import compare_runs
from fexbench.core.metrics import Metric, MetricValue
from fexbench.core.results import JobResult, write_result
from fexbench.core.contract import Environment
from fexbench.harness.driver import run
from fexbench.harness.runner import run_job

TASK = "imagenet9-background"
TINY = dict(p_natives=[0.0, 0.5, 1.0], seeds=[0], n_train=900, n_probe=180, n_test=180, epochs=3, width=8,
            n_bootstrap=200)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    env = Environment(cache_dir=root / "cache", out_dir=root / "out", progress=False)
    results = run([TASK], ["oracle", "class-name"], env, task_configs={TASK: TINY}, log=lambda s: None)
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return root


def test_worse_explainer_exits_1_and_names_the_regression(folder, capsys):
    code = main(["compare", str(folder / "out"), "--explainers", "oracle,class-name", "--margin", "0.05"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "oracle higher" in out and "oracle vs class-name" in out
    assert not re.search("regression|improvement", out, re.I), out  # kept for two versions of one explainer
    # the other way round the NEW explainer is the higher one, and the gate passes
    assert main(["compare", str(folder / "out"), "--explainers", "class-name,oracle", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    head = [r for r in data["rows"] if r["headline"]][0]
    assert head["verdict"] == "class-name lower" and head["difference"] > 0 and not data["failed"]
    assert "regression" not in data and data["explainers"] == ["class-name", "oracle"]


def test_same_result_twice_is_no_change(folder, capsys):
    path = folder / "out" / TASK / "oracle.json"
    assert main(["compare", str(path), str(path)]) == 0
    assert "no detectable change" in capsys.readouterr().out


def test_different_ground_truth_is_refused_unless_forced(folder, tmp_path, capsys):
    env = Environment(cache_dir=folder / "cache", out_dir=tmp_path / "other", progress=False, seed=5)
    run([TASK], ["oracle"], env, task_configs={TASK: TINY}, log=lambda s: None)
    base, new = str(folder / "out" / TASK / "oracle.json"), str(tmp_path / "other" / TASK / "oracle.json")
    assert main(["compare", base, new]) == 2
    err = capsys.readouterr().err
    assert "different ground truth" in err and "probe" in err
    assert main(["compare", base, new, "--force"]) in (0, 1)
    assert "warning" in capsys.readouterr().err


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such result folder" in err and "Traceback" not in err


def test_false_alarm_rate_of_reseeded_stochastic_explainer(folder, tmp_path):
    """random, scored over 5 explainer seeds, run 21 times against the same ground truth with other
    explainer seeds: of the 20 (first, k-th) pairs, at most one may fail the gate."""
    task = registry.tasks.get(TASK)(**TINY)
    env = Environment(cache_dir=folder / "cache", out_dir=tmp_path / "r0", progress=False, explainer_seeds=5)
    prepared = task.prepare(env)
    factory = registry.explainers.get("random")
    results = []
    for k in range(21):  # same prepared data (same ground truth), other explainer seeds
        env_k = dataclasses.replace(env, seed=1000 + k, out_dir=tmp_path / f"r{k}")
        results.append(run_job(TASK, task, prepared, "random", factory, env_k, resume=False))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    alarms = 0
    for other in results[1:]:
        rows, _ = compare_runs([results[0]], [other], margin=0.05)
        alarms += any(r.beyond_margin for r in rows)
    assert alarms <= 1, f"{alarms} false alarms out of 20"


# -- small result files, no training ---------------------------------------------------------------
HIT = Metric("hit", "share of units explained", True, (0.0, 1.0), "test", 0.5)


def _job(task: str, explainer: str, units=None, status: str = "ok", replicates=None) -> JobResult:
    """A result of one metric ("hit", higher is better), its unit values one replicate of `units`
    (or one list per replicate in `replicates`), scored against the same ground truth as every
    other result made here."""
    reps = replicates if replicates is not None else [units if units is not None else [1.0, 0.0, 1.0, 1.0]]
    value = float(np.mean([np.mean(r) for r in reps]))
    if status != "ok":
        return JobResult(task=task, explainer=explainer, oracle=False, status=status, job_key=f"{task}/{explainer}",
                         seed=0, error="RuntimeError: planted failure", hashes={"data": "d0"})
    return JobResult(task=task, explainer=explainer, oracle=False, status="ok", job_key=f"{task}/{explainer}", seed=0,
                     metrics=(MetricValue.of(HIT, value, (value, value), len(reps[0])),),
                     hashes={"data": "d0"},
                     unit_values={"hit": {"statistic": "fexbench.core.metrics:nanmean",
                                          "replicates": [[[list(map(float, r))]] for r in reps]}},
                     replicates=tuple({"index": i, "hashes": {"data": "d0"}} for i in range(len(reps)))
                     if len(reps) > 1 else ())


def _write(folder, *jobs: JobResult):
    for job in jobs:
        write_result(folder, job)
    return folder


UNITS = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]


@pytest.fixture()
def base(tmp_path):
    return _write(tmp_path / "base", *(_job(t, e, UNITS) for t in ("task-a", "task-b") for e in ("e1", "e2")))


def test_a_job_missing_in_new_fails_the_gate_by_name(base, tmp_path, capsys):
    new = _write(tmp_path / "new", *(_job(t, e, UNITS) for t, e in
                                     (("task-a", "e1"), ("task-a", "e2"), ("task-b", "e1"))))
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "missing in NEW: task-b/e2" in out and "FAILED" in out
    assert main(["compare", str(base), str(new), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] and data["coverage"]["missing"] == ["task-b/e2"] and not data["regression"]


def test_a_task_missing_in_new_is_named(base, tmp_path, capsys):
    new = _write(tmp_path / "new", _job("task-a", "e1", UNITS), _job("task-a", "e2", UNITS))
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "tasks of BASE not in NEW: task-b" in out and "task-b/e1" in out and "task-b/e2" in out


def test_an_errored_or_invalid_new_job_fails_the_gate_by_name(base, tmp_path, capsys):
    new = _write(tmp_path / "new", *(_job(t, e, UNITS) for t in ("task-a", "task-b") for e in ("e1",)),
                 _job("task-a", "e2", status="error"), _job("task-b", "e2", UNITS))
    path = new / "task-b" / "e2.json"
    path.write_text(path.read_text().replace('"value": 0.7', '"value": 0.9'))  # edited: fails its digest
    assert main(["compare", str(base), str(new)]) == 1
    captured = capsys.readouterr()
    assert "errored in NEW: task-a/e2 (error: RuntimeError: planted failure)" in captured.out
    assert "invalid in NEW: task-b/e2" in captured.out and "digest" in captured.out
    # a single NEW file that errored fails too (it used to be refused as "holds no ok result")
    assert main(["compare", str(base / "task-a" / "e2.json"), str(new / "task-a" / "e2.json")]) == 1
    assert "errored in NEW: task-a/e2" in capsys.readouterr().out


def test_coverage_line_counts_the_compared_jobs(base, tmp_path, capsys):
    new = _write(tmp_path / "new", *(_job(t, e, UNITS) for t in ("task-a", "task-b") for e in ("e1", "e2")),
                 _job("task-c", "e1", UNITS))
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "coverage: 4 of 4 BASE jobs compared; not in BASE (not compared): task-c/e1" in out
    assert "FAILED" not in out and "no detectable change" in out
    _write(tmp_path / "fewer", _job("task-a", "e1", UNITS))
    assert main(["compare", str(base), str(tmp_path / "fewer")]) == 1
    assert "coverage: 1 of 4 BASE jobs compared" in capsys.readouterr().out


def test_one_explainer_worse_in_new_is_a_regression(tmp_path, capsys):
    base = _write(tmp_path / "base", _job("task-a", "e1", [1.0] * 30))
    new = _write(tmp_path / "new", _job("task-a", "e1", [0.0] * 25 + [1.0] * 5))
    assert main(["compare", str(base), str(new), "--margin", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "worse" in out


def test_two_explainers_are_compared_in_neutral_words(tmp_path, capsys):
    folder = _write(tmp_path / "run", _job("task-a", "good", [1.0] * 30),
                    _job("task-a", "poor", [0.0] * 25 + [1.0] * 5), _job("task-a", "twin", [1.0] * 29 + [0.0]))
    assert main(["compare", str(folder), "--explainers", "good,poor", "--margin", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "good vs poor" in out and "good higher" in out and "poor" in out
    assert not re.search("regression|improvement", out, re.I), out
    assert main(["compare", str(folder), "--explainers", "poor,good"]) == 0
    assert "poor lower" in capsys.readouterr().out
    assert main(["compare", str(folder), "--explainers", "good,twin"]) == 0
    out = capsys.readouterr().out
    assert "no significant difference" in out and not re.search("regression|improvement", out, re.I)


def test_one_replicate_probability_is_over_units(tmp_path, capsys):
    """With one replicate P(NEW > BASE) is the share of unit-bootstrap draws of the paired mean
    difference above zero: strictly between 0 and 1 when the units disagree (the sign of the one
    difference said 1), consistent with the bootstrap p-value (P = 1 - p/2 on the side NEW leans to,
    the draws having no ties), and 1 - P with BASE and NEW swapped."""
    rng = np.random.default_rng(7)
    units = rng.uniform(0.2, 0.8, size=40)  # continuous values: no two draws tie
    other = units + rng.normal(0.02, 0.1, size=40)
    base = _write(tmp_path / "base", _job("task-a", "e1", units))
    new = _write(tmp_path / "new", _job("task-a", "e1", other))

    def row(a, b):
        assert main(["compare", str(a), str(b), "--json"]) in (0, 1)
        return json.loads(capsys.readouterr().out)["rows"][0]

    forward, backward = row(base, new), row(new, base)
    assert forward["difference"] != 0
    p_higher = forward["prob_higher"]
    assert 0 < p_higher < 1, p_higher
    assert (p_higher > 0.5) == (forward["difference"] > 0)
    leaning = p_higher if p_higher > 0.5 else 1 - p_higher
    assert leaning == pytest.approx(1 - forward["p_value"] / 2, abs=1e-9)
    assert backward["prob_higher"] == pytest.approx(1 - p_higher, abs=1e-9)
    # with replicates, P(NEW > BASE) still compares replicate values (every NEW replicate higher: 1)
    _write(tmp_path / "rbase", _job("task-a", "e1", replicates=[units[:20], units[20:], units[:20]]))
    _write(tmp_path / "rnew", _job("task-a", "e1", replicates=[np.ones(20), np.ones(20), np.ones(20)]))
    assert row(tmp_path / "rbase", tmp_path / "rnew")["prob_higher"] == 1.0
