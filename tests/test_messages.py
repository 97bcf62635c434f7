"""The messages of issue #31 item 5: each says what is wrong and what to do, naming the array,
target or rule (and `fexbench explain` names the valid subjects before any training)."""
from __future__ import annotations

import os
import shutil
import unittest
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from fexbench import cli
from fexbench.core import registry
from fexbench.core.contract import Context, Explainer, Explanation, Probe, Subject, Target
from fexbench.core.errors import read_only_write_message
from fexbench.core.results import task_folder_hint

ROOT = Path(__file__).resolve().parents[1]
LEADERBOARD = ROOT / "leaderboard" / "default"
CACHE = Path(os.environ.get("FEXBENCH_TEST_CHECK_CACHE", "/tmp/authors/check-cache"))


# ------------------------------------------------------------------ 1. a task folder for a run folder

@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder of two shipped results: <run>/unit-causes/{oracle,random}.json."""
    run = tmp_path / "run"
    (run / "unit-causes").mkdir(parents=True)
    for name in ("oracle", "random"):
        shutil.copy(LEADERBOARD / "unit-causes" / f"{name}.json", run / "unit-causes" / f"{name}.json")
    return run


@pytest.mark.parametrize("argv", [
    ["compare", "{task}", "{run}"],
    ["compare", "{run}", "{task}"],
    ["power", "{task}"],
    ["agreement", "{task}", "{run}"],
    ["reproduce", "{task}"],
    ["publish", "{task}", "--out", "{site}"],
], ids=lambda a: " ".join(a[:2]))
def test_a_task_folder_given_for_a_run_folder_says_so_and_names_the_run_folder(argv, run_dir, tmp_path, capsys):
    task = run_dir / "unit-causes"
    args = [a.format(task=task, run=run_dir, site=tmp_path / "site") for a in argv]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{task}: looks like a task folder of a run (it holds <explainer>.json files directly: oracle.json, " \
           f"random.json)" in err, err
    assert f"pass the run folder, its parent: {run_dir}" in err, err
    assert "holds no ok result" not in err and "no readable results" not in err


def test_the_task_folder_hint_is_only_for_a_task_folder(run_dir, tmp_path):
    assert task_folder_hint(run_dir) is None  # a run folder
    assert task_folder_hint(tmp_path / "nowhere") is None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.json").write_text('{"a": 1}')
    assert task_folder_hint(tmp_path / "other") is None  # JSON that is no result


# ------------------------------------------------------------------ 2. a write into a probe array

def _probe() -> Probe:
    arrays = [np.zeros((4, 3, 2, 2)), np.ones((4, 5)), np.ones((4, 2))]
    for a in arrays:
        a.flags.writeable = False
    return Probe(*arrays, "penultimate", tuple("abcd"))


def _raised(write) -> BaseException:
    try:
        write()
    except ValueError as exc:
        return exc
    raise AssertionError("no error")


def test_a_write_into_a_probe_array_names_the_array_and_the_rule():
    probe = _probe()

    def centre():
        X = probe.features
        X -= X.mean(axis=0)

    message = read_only_write_message(_raised(centre), probe, "explainer 'centring'")
    assert message.startswith("explainer 'centring' wrote into context.probe.features (held in 'X'), which is "
                              "read-only: explainers must not modify probe arrays"), message
    assert "copy it first: np.array(context.probe.features)" in message
    assert "assignment destination is read-only" in message or "output array is read-only" in message

    def direct():
        probe.logits[:, 0] = 0.0

    message = read_only_write_message(_raised(direct), probe)
    assert "wrote into context.probe.logits, which is read-only" in message
    assert "np.array(context.probe.logits)" in message

    def view():
        corner = probe.images[:2, :, :1]
        corner[...] = 1.0

    assert "context.probe.images (held in 'corner')" in read_only_write_message(_raised(view), probe)
    assert read_only_write_message(ValueError("could not convert string to float"), probe) is None


class WritesProbe(Explainer):
    name = "writes-probe"

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        features = context.probe.features
        features -= features.mean(axis=0)  # in place: refused (the probe is read-only)
        return [Explanation.from_weights(t, {"red": 1.0}) for t in targets]


class Good(Explainer):
    """Deterministic and honest (as in test_check_explainer)."""

    name = "good"

    def explain(self, subject, targets, context):
        vocab = sorted(context.vocabulary)
        return [Explanation.from_weights(t, {vocab[(hash(t.key) % 97 + i) % len(vocab)]: 1.0 / (i + 1)
                                             for i in range(3)}) for t in targets]


class WrongOrder(Good):
    def explain(self, subject, targets, context):  # answers in a canonical order, not the asked one
        return super().explain(subject, sorted(targets, key=lambda t: (t.kind, t.index)), context)


class Unseeded(Good):
    _calls = 0

    def explain(self, subject, targets, context):
        type(self)._calls += 1
        rng = np.random.default_rng(type(self)._calls)  # not context.seed
        vocab = sorted(context.vocabulary)
        return [Explanation.from_weights(t, {vocab[int(rng.integers(len(vocab)))]: 1.0}) for t in targets]


def _outcomes(cls) -> dict:
    from fexbench.testing import explainer_checks, run_checks

    outcomes, _ = run_checks(explainer_checks(cls, {}, CACHE))
    return {o.check: o for o in outcomes}


def test_the_conformance_kit_names_the_probe_array_written_into():
    found = _outcomes(WritesProbe)
    message = found["one_per_target"].message
    assert not found["one_per_target"].passed
    assert "explainer 'writes-probe' wrote into context.probe.features, which is read-only: explainers " \
           "must not modify probe arrays" in message, message
    assert "copy it first: np.array(context.probe.features)" in message


# ------------------------------------------------------------------ 3. targets in the wrong order

def test_wrong_order_fails_one_per_target_naming_the_first_misplaced_target_and_the_rest_skip():
    found = _outcomes(WrongOrder)
    first = found["one_per_target"]
    assert not first.passed and not first.skipped
    assert "returned the explanations in another order than the targets were asked: the first misplaced target " \
           "is unit:" in first.message, first.message
    assert "return one Explanation per target in the order of `targets`" in first.message
    later = [n for n in found if n not in ("metadata", "one_per_target")]
    assert later == ["weights", "seeds", "no_ground_truth", "no_mutation", "resources"]
    for name in later:
        assert found[name].skipped and found[name].message.startswith("skipped: one_per_target failed"), found[name]
    assert found["metadata"].passed


def test_a_check_skipped_after_one_per_target_is_a_pytest_skip():
    from fexbench.testing import CheckSkipped, explainer_checks

    checks = {c.name: c for c in explainer_checks(WrongOrder, {}, CACHE)}
    with pytest.raises(CheckSkipped, match="skipped: one_per_target failed") as caught:
        checks["weights"]()  # run alone: one_per_target is run for the verdict
    assert isinstance(caught.value, unittest.SkipTest)  # pytest reports it as skipped


# ------------------------------------------------------------------ 4. unseeded randomness

def test_unseeded_randomness_is_not_reported_as_a_ground_truth_leak():
    found = _outcomes(Unseeded)
    assert not found["seeds"].passed and "same seed differ" in found["seeds"].message
    ngt = found["no_ground_truth"]
    assert ngt.skipped, ngt
    assert "not deterministic for a fixed seed: see the seeds check" in ngt.message
    assert "ground truth is in reach (context.attributes" not in ngt.message
    assert found["one_per_target"].passed and found["no_mutation"].passed


# ------------------------------------------------------------------ 5. explain: an unknown subject

TASKS = ("waterbirds-spurious", "imagenet9-background", "unit-causes", "sanity-randomization", "concept-transfer")


@pytest.mark.parametrize("task", TASKS)
def test_explain_names_the_valid_subjects_before_any_training(task, monkeypatch, tmp_path, capsys):
    cls = registry.tasks.get(task)

    def prepare(self, env):
        raise AssertionError("prepared (trained) before the subject was checked")

    monkeypatch.setattr(cls, "prepare", prepare)
    code = cli.main(["explain", "--explainer", "oracle", "--task", task, "--subject", "nope", "--target", "x",
                     "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err
    names = cls().subject_names()
    assert f"task {task!r} has no subject 'nope'; its subjects (from the task's options, nothing trained) are: " \
           f"{', '.join(names)}" in err, err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("task", TASKS)
def test_subject_names_are_those_a_run_prepares(task):
    """The names from the options are the names the shipped default run recorded (its ground truth)."""
    import json

    from fexbench.harness.config import default_config

    options = default_config().task_configs().get(task, {})
    recorded = json.loads((LEADERBOARD / task / "oracle.json").read_text())["ground_truth"]
    assert sorted(registry.tasks.get(task)(**options).subject_names()) == sorted(recorded)


# ------------------------------------------------------------------ a broken plugin: list and the doc agree

def test_list_shows_a_broken_plugin_with_its_error_and_exits_0_as_the_doc_says(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FEXBENCH_LIST_CACHE", str(tmp_path / "list.json"))
    real = registry.explainers._entry_points

    def with_broken():
        found = real()
        found["broken-plugin"] = [EntryPoint("broken-plugin", "no_such_module_here:Explainer", "fexbench.explainers")]
        return found

    monkeypatch.setattr(registry.explainers, "_entry_points", with_broken)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "broken plugins (not loaded; fix or uninstall them):" in out
    assert "broken-plugin" in out and "ModuleNotFoundError" in out and "oracle" in out
    doc = " ".join((ROOT / "docs" / "writing-an-explainer.md").read_text().split())
    assert ("`fexbench list` shows a broken entry with its error under \"broken plugins (not loaded; fix or "
            "uninstall them)\", lists everything else and exits 0.") in doc
    assert "`fexbench list` and a `fexbench run` without `--explainers` look up every registered name" not in doc
