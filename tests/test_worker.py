"""Explainers run in a worker process that holds nothing else (issue #29, item 2).

Each cheat of tests/cheats/ runs on a tiny waterbirds-spurious task and must meet its named safe
outcome: the ground truth is not found, the harness's code and the other explainers' inputs are
out of reach, the limits hold from outside (killed at the time limit, out of memory under a hard
limit), an exit is an error row and the run goes on, and what is scored is what is stored. Every
one of these tests fails in the old in-process harness; with FEXBENCH_WORKER_TESTS_INLINE=1 (inline mode)
all but the two boundary tests (str/tuple subclasses, converted on both paths) and the alias test
fail too (the os._exit one ends the test process). Built-in explainers give the same metrics
in a worker as inline.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import cheats
from fexbench.core.contract import Environment, Explanation, ExplainerError, Target
from fexbench.harness.driver import run

TASK = "waterbirds-spurious"
TINY = {"rhos": [0.5, 0.98], "seeds": [0], "n_train": 200, "n_probe": 60, "n_test": 80, "epochs": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("worker-cache")


@pytest.fixture(scope="module", autouse=True)
def registered():
    cheats.register()
    yield
    cheats.unregister()


@pytest.fixture(scope="module", autouse=True)
def process_mode():
    """These tests are about the worker boundary: process mode, whatever the suite's default
    (tests/conftest.py runs the rest inline); FEXBENCH_WORKER_TESTS_INLINE=1 shows the old harness."""
    import os
    with pytest.MonkeyPatch.context() as mp:
        if os.environ.get("FEXBENCH_WORKER_TESTS_INLINE") == "1":
            mp.setenv("FEXBENCH_EXPLAINER_ISOLATION", "inline")
        else:
            mp.setenv("FEXBENCH_EXPLAINER_ISOLATION", "process")
        yield


@pytest.fixture
def runner_pool():
    """The runner's pool before and after: restored whatever a (failing, inline) test let happen."""
    import fexbench.harness.runner as runner

    before = runner.pool
    yield before
    runner.pool = before


def _run(cache, out, explainers, explainer_configs=None, **env):
    environment = Environment(cache_dir=cache, out_dir=out, progress=False, **env)
    results = run([TASK], explainers, environment, task_configs={TASK: TINY}, explainer_configs=explainer_configs,
                  log=lambda s: None)
    return {r.explainer: r for r in results}


def _values(result):
    return [m.value for m in result.metrics]


def _words(result):
    return {subject: [[w for w, _ in e["concepts"]] for e in exps] for subject, exps in result.explanations.items()}


# -- reading the ground truth -----------------------------------------------------------------------------
@pytest.mark.parametrize("cheat", ["cheat-frames", "cheat-gc"])
def test_walking_frames_or_the_gc_finds_no_ground_truth(cache, tmp_path, cheat):
    result = _run(cache, tmp_path / cheat, [cheat])[cheat]
    assert result.status == "ok", result.error
    words = _words(result)
    assert len(words) == len(TINY["rhos"]) * len(TINY["seeds"])
    assert all(w == [cheats.NOT_FOUND] for exps in words.values() for w in exps), words


def test_aliases_cannot_be_inverted_to_names_and_the_secret_stays_outside(cache, tmp_path):
    from fexbench.core.results import read_result
    from fexbench.harness.isolation import SECRET_FILE, secret_id

    oracle = _run(cache, tmp_path / "o", ["oracle"])["oracle"]
    names = sorted(oracle.ground_truth)
    result = _run(cache, tmp_path / "alias", ["cheat-alias"],
                  explainer_configs={"cheat-alias": {"candidates": names}})["cheat-alias"]
    assert result.status == "ok", result.error
    assert all(w == [cheats.NOT_FOUND] for exps in _words(result).values() for w in exps)  # not inverted
    evidence = [dict(line.split("=", 1) for line in exps[0]["evidence"]) for exps in result.explanations.values()]
    assert all(e["alias"].startswith("subject-") for e in evidence)
    secret = Path(cache) / SECRET_FILE
    assert len(secret.read_text().strip()) == 32
    assert all(not secret.is_relative_to(e["area"]) for e in evidence)  # outside every explainer's area
    assert result.config["run_secret"] == secret_id(bytes.fromhex(secret.read_text().strip()))
    # the same cache, the same secret: a second run resumes, with the same aliases
    again = _run(cache, tmp_path / "alias", ["cheat-alias"], explainer_configs={"cheat-alias": {"candidates": names}})
    assert again["cheat-alias"].resumed and read_result(tmp_path / "alias" / TASK / "cheat-alias.json").job_key == \
        result.job_key


# -- sabotage -----------------------------------------------------------------------------------------------
def test_monkeypatching_the_runner_reaches_only_the_worker(cache, tmp_path, runner_pool):
    import fexbench.harness.runner as runner

    clean = _run(cache, tmp_path / "clean", ["oracle"])["oracle"]
    dirty = _run(cache, tmp_path / "dirty", ["cheat-pool", "oracle"])
    assert runner.pool is runner_pool
    assert dirty["cheat-pool"].status == "ok" and -1.0 not in _values(dirty["cheat-pool"])
    np.testing.assert_array_equal(_values(dirty["oracle"]), _values(clean))


def test_writing_other_replicates_probe_arrays_changes_no_other_result(cache, tmp_path):
    clean = _run(cache, tmp_path / "clean", ["oracle"], replicates=2)["oracle"]
    dirty = _run(cache, tmp_path / "dirty", ["cheat-probe", "oracle"], replicates=2)
    assert dirty["cheat-probe"].status in ("ok", "error")
    assert clean.status == dirty["oracle"].status == "ok"
    np.testing.assert_array_equal(_values(dirty["oracle"]), _values(clean))
    assert [r["per_subject"] for r in dirty["oracle"].replicates] == [r["per_subject"] for r in clean.replicates]


# -- limits, from outside -----------------------------------------------------------------------------------
def test_disarming_the_alarm_is_killed_at_the_time_limit(cache, tmp_path):
    _run(cache, tmp_path / "warm", ["class-name"])  # the zoo is built before the clock matters
    results = _run(cache, tmp_path / "alarm", ["cheat-alarm", "class-name"], job_time_limit_s=3.0)
    cheat = results["cheat-alarm"]
    assert cheat.status == "error" and "time limit of 3 s" in cheat.error and "killed" in cheat.error, cheat.error
    assert cheat.wall_time_s < 3.0 + 5.0  # the limit plus slack for a loaded machine, far below its 20 s
    assert cheat.config["job_limits"]["time_s"] == 3.0
    assert results["class-name"].status == "ok"


def test_raising_its_own_memory_limit_fails_and_it_runs_out_of_memory(cache, tmp_path):
    results = _run(cache, tmp_path / "rlimit", ["cheat-rlimit", "class-name"], job_memory_limit_mb=300)
    cheat = results["cheat-rlimit"]
    assert cheat.status == "error" and "out of memory" in cheat.error and "300 MB" in cheat.error, cheat.error
    assert results["class-name"].status == "ok"


def test_os_exit_is_an_error_row_and_the_run_goes_on(cache, tmp_path):
    results = _run(cache, tmp_path / "exit", ["cheat-osexit", "class-name"])
    cheat = results["cheat-osexit"]
    assert cheat.status == "error" and "exited with code 0" in cheat.error, cheat.error
    assert results["class-name"].status == "ok"
    assert (tmp_path / "exit" / TASK / "cheat-osexit.json").exists()


# -- the boundary: what is scored is what is stored -----------------------------------------------------------
def test_a_str_subclass_is_scored_as_the_word_it_stores(cache, tmp_path):
    result = _run(cache, tmp_path / "str", ["cheat-str"])["cheat-str"]
    assert result.status == "ok", result.error
    assert all(w == ["zzz"] for exps in _words(result).values() for w in exps)
    # scored as stored: "zzz" names no background (read as "water" it would)
    assert all(s["background_score"] == 0.0 for s in result.per_subject.values()), result.per_subject
    assert all(s["top_words"] == [["zzz"], ["zzz"]] for s in result.per_subject.values())


def test_a_tuple_subclass_cannot_slip_bad_weights_past_the_check(cache, tmp_path):
    result = _run(cache, tmp_path / "tuple", ["cheat-tuple"])["cheat-tuple"]
    assert result.status == "error", result.explanations
    assert "weight of 'water' is -4.0" in result.error and "finite and non-negative" in result.error


def test_plain_conversion_reads_stored_values_and_rebuilds_exact_types():
    from fexbench.harness.worker import from_plain, to_plain

    t = Target("class", 1, "round")
    returned = [Explanation(t, ((cheats.Pretend("zzz", "water"), np.float32(0.5)),), (cheats.Pretend("e", "x"),))]
    plain = to_plain(returned)
    assert plain == {"items": [{"target": t.key, "concepts": [["zzz", 0.5]], "evidence": ["e"]}]}
    (exp,) = from_plain("x", "s", (t,), json.loads(json.dumps(plain)))
    (word, weight), = exp.concepts
    assert type(word) is str and type(weight) is float and type(exp.concepts) is tuple and exp.target is t
    with pytest.raises(ExplainerError, match="finite and non-negative"):
        from_plain("x", "s", (t,), to_plain([Explanation(t, cheats.Sneaky((("a", -4.0),)))]))
    with pytest.raises(ExplainerError, match="returned 0 explanations for 1 targets"):
        from_plain("x", "s", (t,), to_plain([]))
    with pytest.raises(ExplainerError, match="returned a str, not an Explanation"):
        from_plain("x", "s", (t,), to_plain(["no"]))


# -- the same numbers ----------------------------------------------------------------------------------------
def test_built_in_explainers_score_the_same_in_a_worker_and_inline(cache, tmp_path, monkeypatch):
    monkeypatch.delenv("FEXBENCH_EXPLAINER_ISOLATION", raising=False)
    names = ["oracle", "random", "class-name"]
    worker = _run(cache, tmp_path / "process", names, explainer_isolation="process")
    inline = _run(cache, tmp_path / "inline", names, explainer_isolation="inline")
    for name in names:
        assert worker[name].status == inline[name].status == "ok", (worker[name].error, inline[name].error)
        assert worker[name].config["explainer_isolation"] == "process"
        assert inline[name].config["explainer_isolation"] == "inline"
        a, b = _values(worker[name]), _values(inline[name])
        assert all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)), (name, a, b)
        assert json.dumps(worker[name].per_subject, sort_keys=True) == json.dumps(inline[name].per_subject,
                                                                                  sort_keys=True)
        assert worker[name].explanations == inline[name].explanations
