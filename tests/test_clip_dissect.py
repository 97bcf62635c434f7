"""CLIP-Dissect: soft-WPMI against a hand computation, the cosine option, a planted unit, targets."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fexbench.core.contract import Target
from fexbench.explainers.clip_dissect import ClipDissectExplainer, cos_similarity, soft_membership, soft_wpmi

from planted import planted_case  # hand-built subject: unit 0 fires on red objects


def test_soft_wpmi_equals_a_hand_computed_value():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])      # P(c | x): 3 images x 2 concepts
    acts = np.array([[3.0, 0.0], [1.0, 5.0], [2.0, 1.0]])       # 2 units; tops: unit 0 -> x0, x2; unit 1 -> x1, x2
    # top_k=2, p from 0.9 falling by (0.9 - 0.5) / 2 per rank: 0.9, 0.7
    b0 = [(0.1 + 0.9 * 0.7) * (0.3 + 0.7 * 0.5), (0.1 + 0.9 * 0.3) * (0.3 + 0.7 * 0.5)]  # 0.4745, 0.2405
    b1 = [(0.1 + 0.9 * 0.2) * (0.3 + 0.7 * 0.5), (0.1 + 0.9 * 0.8) * (0.3 + 0.7 * 0.5)]  # 0.182, 0.533
    prior = [(b0[c] + b1[c]) / 2 for c in range(2)]
    expected = np.log([[b0[0] / prior[0], b0[1] / prior[1]], [b1[0] / prior[0], b1[1] / prior[1]]])
    got = soft_wpmi(probs, acts, top_k=2, p_start=0.9, p_end=0.5)
    assert np.allclose(got, expected, atol=1e-5)
    assert math.isclose(got[0, 0], math.log(0.4745 / 0.32825), abs_tol=1e-5)
    # lam scales the prior; a prior over other units changes only the prior term
    assert np.allclose(soft_wpmi(probs, acts, top_k=2, p_start=0.9, p_end=0.5, lam=0.0), np.log([b0, b1]), atol=1e-5)


def test_soft_membership_follows_the_reference_schedule():
    p = soft_membership(100)
    assert p[0] == pytest.approx(0.998) and p[-1] == pytest.approx(0.998 - 99 / 100 * 0.028)
    assert np.all(np.diff(p) < 0)


def test_cos_similarity_is_a_cosine_over_images():
    sims = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    acts = np.array([2.0, 0.0, 2.0])
    got = cos_similarity(sims, acts[:, None])[0]
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(0.5)


def test_planted_red_unit_is_named_red(tmp_path, small_clip):
    subject, context = planted_case(small_clip, tmp_path)
    targets = (Target("unit", 0), Target("unit", 1), Target("unit", 2), Target("class", 0, "red-ish"),
               Target("direction", direction=tuple(np.eye(subject.model.n_units)[0])))
    explainer = ClipDissectExplainer(clip_model="resource").fit(subject, context)
    red, green, blue, cls, direction = explainer.explain(subject, targets, context)
    assert "red" in red.words(3), red.concepts        # units follow world.COLOURS: red, green, blue, ...
    assert "green" in green.words(3), green.concepts
    assert "blue" in blue.words(3), blue.concepts
    assert "red" in cls.words(3), cls.concepts  # class 0's logit is the red unit
    assert direction.words(3) == red.words(3)   # a direction along unit 0 is unit 0
    assert all(w >= 0 and math.isfinite(w) for _, w in red.concepts)
    cos = ClipDissectExplainer(clip_model="resource", similarity="cos").fit(subject, context)
    assert "red" in cos.explain(subject, targets[:1], context)[0].words(3)


def test_concept_file_and_bad_config(tmp_path, small_clip):
    subject, context = planted_case(small_clip, tmp_path)
    words = tmp_path / "words.txt"
    words.write_text("lava\nred\nguitar\n\nred\n")
    explainer = ClipDissectExplainer(clip_model="resource", concepts=str(words), n_words=3).fit(subject, context)
    assert set(explainer.explain(subject, (Target("unit", 0),), context)[0].words()) <= {"lava", "red", "guitar"}
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        ClipDissectExplainer(clip_model="resource", concepts=str(tmp_path / "nope.txt")).fit(subject, context)
    with pytest.raises(ValueError, match="similarity"):
        ClipDissectExplainer(similarity="wpmi")


# ---------------------------------------------------------------- layer-scale scoring

def _per_target_log_given(probs, acts, top_k, p_start=0.998, p_end=0.97, min_prob=1e-7):
    """The formula unit by unit, as fexbench computed it per target before layer-scale scoring."""
    acts = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
    p = soft_membership(top_k, p_start, p_end).astype(np.float64)[:, None]  # float32 values, as released
    out = np.empty((acts.shape[1], probs.shape[1]))
    for k in range(acts.shape[1]):
        top = np.argsort(-acts[:, k], kind="stable")[:top_k]
        out[k] = np.log(1 - p + p * probs[top] + min_prob).sum(axis=0)
    return out


def _random_case(n=300, n_units=40, n_classes=5, n_words=60, seed=0):
    from fexbench.core.contract import Context, Probe

    rng = np.random.default_rng(seed)
    features = rng.gamma(1.0, 1.0, (n, n_units)).astype(np.float32)
    logits = (features @ rng.normal(size=(n_units, n_classes))).astype(np.float32)
    probe = Probe(np.zeros((n, 2, 2, 3), np.uint8), features, logits, "penultimate", tuple(map(str, range(n))))
    words = tuple(f"w{i}" for i in range(n_words))
    sims = rng.normal(0.2, 0.05, (n, n_words))
    return Context(probe, words), words, sims


def test_layer_scores_equal_the_per_target_computation():
    from scipy.special import logsumexp, softmax

    context, words, sims = _random_case()
    probe, top_k = context.probe, 30
    explainer = ClipDissectExplainer(top_k=top_k, lam=1.0, dtype="float64").use_similarities(words, sims)
    probs = softmax(10.0 * sims, axis=1)
    direction = np.random.default_rng(1).normal(size=probe.features.shape[1])
    targets = ([Target("unit", k) for k in range(probe.features.shape[1])]
               + [Target("class", c) for c in range(probe.logits.shape[1])]
               + [Target("direction", direction=tuple(direction))])
    for target in targets:
        if target.kind == "class":
            acts, prior_acts = probe.logits[:, target.index], probe.logits
        elif target.kind == "unit":
            acts, prior_acts = probe.features[:, target.index], probe.features
        else:
            acts, prior_acts = probe.features @ direction.astype(np.float32), probe.features
        given = _per_target_log_given(probs, acts, top_k)[0]
        prior_given = _per_target_log_given(probs, prior_acts, top_k)
        expected = given - (logsumexp(prior_given, axis=0) - np.log(len(prior_given)))
        scores, got_given = explainer.soft_wpmi_scores(target, context)
        assert np.abs(scores - expected).max() < 1e-5, target
        assert np.abs(got_given - given).max() < 1e-5, target
    words_of = explainer.explain(None, targets, context)
    assert all(len(e.concepts) == explainer.n_words for e in words_of)


def test_a_layer_is_scored_once_not_once_per_target(monkeypatch):
    import fexbench.explainers.clip_dissect as cd

    context, words, sims = _random_case()
    calls = []
    original = cd.log_p_concept_given_top
    monkeypatch.setattr(cd, "log_p_concept_given_top", lambda probs, acts, *a, **k: calls.append(
        np.atleast_2d(np.asarray(acts).T).T.shape[1]) or original(probs, acts, *a, **k))
    explainer = ClipDissectExplainer(top_k=30).use_similarities(words, sims)
    units = [Target("unit", k) for k in range(context.probe.features.shape[1])]
    explainer.explain(None, units + [Target("class", 0), Target("class", 1)], context)
    assert sorted(calls) == sorted([context.probe.features.shape[1], context.probe.logits.shape[1]])
    explainer.explain(None, [Target("direction", direction=tuple(np.eye(40)[3]))], context)
    assert calls[-1] == 1 and len(calls) == 3  # a direction: one extra column, the layer is reused
