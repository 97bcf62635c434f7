"""check-explainer: every built-in explainer passes on the tiny world; each planted defect is caught
by the check that names it (and only a real defect fails: the good baseline passes the same checks)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target
from fexbench.explainers.baselines import RandomExplainer
from fexbench.testing import CheckFailed, CheckSkipped, check_explainer, explainer_checks

CACHE = Path(os.environ.get("FEXBENCH_TEST_CHECK_CACHE", "/tmp/authors/check-cache"))
TEXPLAIN_FAST = dict(n_sentences=60, batch_size=32, n_fit=64, fit_epochs=2, fit_batch_size=32, hidden=24,
                     max_tokens=12)
BUILTINS = [("random", {}), ("class-name", {}), ("oracle", {}), ("clip-dissect", {}), ("falcon", {}),
            ("texplain", TEXPLAIN_FAST), ("texplain-contrast", TEXPLAIN_FAST)]


class Good(Explainer):
    """A deterministic, honest explainer: the vocabulary words ranked by a hash of the target."""

    name = "good"

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        vocab = sorted(context.vocabulary)
        return [Explanation.from_weights(t, {vocab[(hash(t.key) % 97 + i) % len(vocab)]: 1.0 / (i + 1)
                                             for i in range(3)}) for t in targets]


class WrongCount(Good):
    def explain(self, subject, targets, context):
        return super().explain(subject, targets, context)[:-1] if len(targets) > 1 else []


class WrongOrder(Good):
    def explain(self, subject, targets, context):  # answers in a canonical order, not the asked one
        return super().explain(subject, sorted(targets, key=lambda t: (t.kind, t.index)), context)


class NaNWeight(Good):
    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {"red": float("nan")}) for t in targets]


class NegativeWeight(Good):
    def explain(self, subject, targets, context):
        out = super().explain(subject, targets, context)  # slipped past the constructor's own check
        bad = Explanation(out[0].target, (("red", 1.0),))
        object.__setattr__(bad, "concepts", (("red", -1.0),))
        return [bad] + out[1:]


class Nondeterministic(Good):
    _calls = 0

    def explain(self, subject, targets, context):
        type(self)._calls += 1
        rng = np.random.default_rng(type(self)._calls)  # not context.seed
        vocab = sorted(context.vocabulary)
        return [Explanation.from_weights(t, {vocab[int(rng.integers(len(vocab)))]: 1.0}) for t in targets]


class ClaimsStochastic(Good):
    stochastic = True  # ...but ignores context.seed


class PeeksAtGroundTruth(Good):
    def explain(self, subject, targets, context):
        if context.attributes:  # only an oracle may
            words = sorted(set(context.attributes["background"]))[:2]
            return [Explanation.from_weights(t, {w: 1.0 for w in words}) for t in targets]
        return super().explain(subject, targets, context)


class ReadsCard(Good):
    def explain(self, subject, targets, context):
        if "rho" in subject.config:
            return [Explanation.from_weights(t, {"water": 1.0}) for t in targets]
        return super().explain(subject, targets, context)


class MutatesProbe(Good):
    def explain(self, subject, targets, context):
        features = context.probe.features
        try:
            features -= features.mean(axis=0)  # in place: every other explainer would see it
        except ValueError:
            features = features - features.mean(axis=0)
        return super().explain(subject, targets, context)


class MutatesVocabulary(Good):
    def explain(self, subject, targets, context):
        if isinstance(context.vocabulary, list):
            context.vocabulary.append("extra")
        return super().explain(subject, targets, context)


class UndeclaredClip(Good):
    def explain(self, subject, targets, context):
        context.resources["clip"]  # read, but resource_names() says ()
        return super().explain(subject, targets, context)


class ClassOnly(Good):
    target_kinds = ("class",)

    def explain(self, subject, targets, context):
        assert all(t.kind == "class" for t in targets), "sent a kind it did not declare"
        return super().explain(subject, targets, context)


def failures(cls, **options) -> dict[str, str]:
    out = {}
    for check in explainer_checks(cls, options, CACHE):
        try:
            check()
        except CheckFailed as exc:
            out[check.name] = str(exc)
        except CheckSkipped:  # could not be told (tests/test_messages.py shows why)
            pass
    return out


@pytest.mark.parametrize("name,options", BUILTINS, ids=[b[0] for b in BUILTINS])
def test_builtin_explainers_pass(name, options):
    outcomes = check_explainer(name, options, CACHE)
    assert [o.check for o in outcomes] == ["metadata", "one_per_target", "weights", "seeds", "no_ground_truth",
                                           "no_mutation", "resources"]


def test_good_explainer_passes_and_declared_kinds_are_respected():
    assert failures(Good) == {}
    assert failures(ClassOnly) == {}
    note = explainer_checks(ClassOnly, {}, CACHE)[0]()
    assert "unit, direction targets skipped" in note


@pytest.mark.parametrize("cls,check,words", [
    (WrongCount, "one_per_target", "explanations for"),
    (WrongOrder, "one_per_target", "another order than the targets were asked"),
    (NaNWeight, "one_per_target", "nan"),
    (NegativeWeight, "weights", "-1.0"),
    (Nondeterministic, "seeds", "same seed differ"),
    (ClaimsStochastic, "seeds", "declared stochastic"),
    (PeeksAtGroundTruth, "no_ground_truth", "context.attributes"),
    (ReadsCard, "no_ground_truth", "subject.config"),
    (MutatesProbe, "no_mutation", "probe.features"),
    (MutatesVocabulary, "no_mutation", "vocabulary"),
    (UndeclaredClip, "resources", "'clip'"),
], ids=lambda x: x.__name__ if isinstance(x, type) else None)
def test_planted_defect_is_caught(cls, check, words):
    found = failures(cls)
    assert check in found, found
    assert check in found[check] and words in found[check], found[check]


def test_random_is_stochastic_and_varies_with_seed():
    assert RandomExplainer.stochastic and failures(RandomExplainer) == {}


def test_cli_reports_each_check_and_exits_1_on_failure(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    ok = subprocess.run([sys.executable, "-m", "fexbench.cli", "check-explainer", "class-name",
                         "--cache-dir", str(CACHE)], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "7/7 checks passed" in ok.stdout and "per target" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fexbench.cli", "check-explainer",
                          "test_check_explainer:PeeksAtGroundTruth", "--cache-dir", str(CACHE)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL no_ground_truth" in bad.stdout
    unknown = subprocess.run([sys.executable, "-m", "fexbench.cli", "check-explainer", "nope",
                              "--cache-dir", str(CACHE)], capture_output=True, text=True, env=env, timeout=300)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
