"""Explainers cannot score by reading labels, nor change another explainer's score.

Each planted cheat below would beat the oracle without the harness's isolation (the subject card
holds the training correlation rho, the subject's name spells it, the run's cache holds the
labelled world files, the probe arrays are shared by every explainer). Each must gain nothing, or
be caught as an error row naming the explainer, while the other jobs' results stay exactly as in
a run without the cheat.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fexbench.core import registry
from fexbench.core.contract import Environment, Explainer, ExplainerError, Explanation, Target
from fexbench.harness.driver import run

TASK = "waterbirds-spurious"
TINY = dict(rhos=[0.5, 0.9, 0.98], seeds=[0, 1], n_train=300, n_probe=100, n_test=100, epochs=2,
            base_epochs=0)  # from scratch: this tiny zoo then has both biased and unbiased subjects


def _bg_words(target, amount: float) -> Explanation:
    """'water' for round, 'grass' for angular, weighted by amount against a neutral word."""
    word = "water" if target.index == 1 else "grass"
    return Explanation.from_weights(target, {word: max(amount, 0.0), "thing": 1.0})


class ReadsCard(Explainer):
    name = "cheat-card"

    def explain(self, subject, targets, context):
        rho = float((subject.config.get("data") or {}).get("rho") or 0.5)
        return [_bg_words(t, rho) for t in targets]


class ReadsName(Explainer):
    name = "cheat-name"

    def explain(self, subject, targets, context):
        found = re.search(r"rho([0-9.]+)", subject.name)
        rho = float(found.group(1)) if found else 0.5
        return [_bg_words(t, rho) for t in targets]


class ReadsWorldFiles(Explainer):
    name = "cheat-files"

    def explain(self, subject, targets, context):
        found = list(Path(context.cache_dir).rglob("*.safetensors")) if Path(context.cache_dir).exists() else []
        return [_bg_words(t, float(len(found))) for t in targets]


class Mutates(Explainer):
    name = "cheat-mutate"

    def explain(self, subject, targets, context):
        context.probe.features[:] = 0.0  # would change every later explainer's inputs
        return [_bg_words(t, 1.0) for t in targets]


class ForcesWrite(Explainer):
    """Tries harder: makes the array writeable again before writing."""
    name = "cheat-force"

    def explain(self, subject, targets, context):
        context.probe.logits.setflags(write=True)
        context.probe.logits[:] = 0.0
        return [_bg_words(t, 1.0) for t in targets]


class Exits(Explainer):
    name = "cheat-exit"

    def explain(self, subject, targets, context):
        raise SystemExit(3)


class Hangs(Explainer):
    name = "cheat-hang"

    def explain(self, subject, targets, context):
        while True:
            time.sleep(0.01)


CHEATS = (ReadsCard, ReadsName, ReadsWorldFiles, Mutates, ForcesWrite, Exits, Hangs)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("isolation-cache")


@pytest.fixture
def cheats():
    for cls in CHEATS:
        registry.register_explainer(cls.name, cls)
    yield
    for cls in CHEATS:
        registry.explainers.unregister(cls.name)


def _run(cache, out, explainers, **env):
    environment = Environment(cache_dir=cache, out_dir=out, progress=False, **env)
    return {r.explainer: r for r in run([TASK], explainers, environment, task_configs={TASK: TINY}, log=lambda s: None)}


def test_the_zoo_really_varies_in_reliance(cache, tmp_path):
    """The cheats below would win if they could read rho: reliance rises with rho in this zoo."""
    oracle = _run(cache, tmp_path / "o", ["oracle"])["oracle"]
    reliance = {name: truth["reliance"] for name, truth in oracle.ground_truth.items()}
    low = [v for k, v in reliance.items() if "rho0.5-" in k]
    high = [v for k, v in reliance.items() if "rho0.98-" in k]
    assert min(high) > max(low)


@pytest.mark.parametrize("cheat", ["cheat-card", "cheat-name", "cheat-files"])
def test_reading_labels_gains_nothing(cache, tmp_path, cheats, cheat):
    result = _run(cache, tmp_path / cheat, [cheat])[cheat]
    assert result.status == "ok", result.error
    # every subject gets the same explanation: no ranking information at all
    assert result.metric("spearman_reliance").value == 0.0
    assert result.metric("auroc_biased").value == 0.5


@pytest.mark.parametrize("cheat", ["cheat-mutate", "cheat-force"])
def test_writing_into_the_probe_is_an_error_row_and_changes_no_other_result(cache, tmp_path, cheats, cheat):
    clean = _run(cache, tmp_path / "clean", ["oracle", "class-name"])
    dirty = _run(cache, tmp_path / "dirty", [cheat, "oracle", "class-name"])
    assert dirty[cheat].status == "error"
    assert cheat in dirty[cheat].error and ("read-only" in dirty[cheat].error or "modified" in dirty[cheat].error)
    for name in ("oracle", "class-name"):
        np.testing.assert_array_equal([m.value for m in dirty[name].metrics], [m.value for m in clean[name].metrics])
        assert dirty[name].job_key == clean[name].job_key


def test_system_exit_in_an_explainer_is_its_error_row(cache, tmp_path, cheats):
    results = _run(cache, tmp_path / "exit", ["cheat-exit", "class-name"])
    assert results["cheat-exit"].status == "error" and "SystemExit" in results["cheat-exit"].error
    assert results["class-name"].status == "ok"


def test_a_hanging_explainer_is_stopped_by_the_job_time_limit(cache, tmp_path, cheats):
    _run(cache, tmp_path / "warm", ["class-name"])  # the zoo is built before the clock matters
    t0 = time.perf_counter()
    results = _run(cache, tmp_path / "hang", ["cheat-hang", "class-name"], job_time_limit_s=2.0)
    assert time.perf_counter() - t0 < 30
    assert results["cheat-hang"].status == "error" and "time limit" in results["cheat-hang"].error
    assert results["class-name"].status == "ok"


def test_explainers_see_an_opaque_subject_and_their_own_cache_area(cache, tmp_path):
    """What an explainer saw travels back in its evidence (it runs in a worker process: a closure
    of this test would stay empty)."""
    class Looks(Explainer):
        name = "looks"

        def explain(self, subject, targets, context):
            seen = {"name": subject.name, "config": dict(subject.config), "area": str(context.cache_dir),
                    "attributes": context.attributes, "writeable": bool(context.probe.features.flags.writeable)}
            return [Explanation.from_weights(t, {"thing": 1.0}, evidence=[json.dumps(seen)]) for t in targets]

    registry.register_explainer("looks", Looks)
    try:
        result = _run(cache, tmp_path / "looks", ["looks"])["looks"]
    finally:
        registry.explainers.unregister("looks")
    assert result.status == "ok", result.error
    seen = [json.loads(exps[0]["evidence"][0]) for exps in result.explanations.values()]
    assert len({s["name"] for s in seen}) == len(TINY["rhos"]) * len(TINY["seeds"])
    for s in seen:
        assert "rho" not in s["name"] and s["config"] == {} and s["attributes"] is None and not s["writeable"]
        assert Path(s["area"]).is_relative_to(Path(cache) / "explainers")


def test_from_weights_rejects_nan_and_negative_weights():
    t = Target("class", 0, "x")
    for bad in (float("nan"), -0.5, float("inf")):
        with pytest.raises(ExplainerError, match="finite and non-negative"):
            Explanation.from_weights(t, {"a": 1.0, "b": bad})
    assert Explanation.from_weights(t, {"a": 1.0, "b": 0.0}).words() == ["a"]  # zero is dropped, not an error


def test_read_only_probe_cannot_be_made_writeable_again():
    from fexbench.harness.isolation import read_only

    base = np.arange(6.0)
    view = read_only(base[1:4])
    with pytest.raises(ValueError):
        view.setflags(write=True)
    with pytest.raises(ValueError):
        view[0] = 9
