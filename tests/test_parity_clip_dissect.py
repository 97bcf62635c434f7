"""CLIP-Dissect against a transcription of the released `similarity.py` (soft_wpmi,
cos_similarity_cubed), on continuous, quantised and ReLU-sparse activations.

The transcription keeps the released code's operations and dtypes (float32 inputs, `torch.topk`,
float32 memberships and log K, the per-unit loop); only the device, tqdm and print are left out.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fexbench.core.contract import Context, Probe, Target
from fexbench.explainers.clip_dissect import ClipDissectExplainer, cos_similarity_cubed, soft_wpmi
from fexbench.perf.clip_dissect import released_soft_wpmi


def released_cos_similarity_cubed(clip_feats, target_feats, min_norm=1e-3):
    clip_feats = clip_feats - torch.mean(clip_feats, dim=0, keepdim=True)
    target_feats = target_feats - torch.mean(target_feats, dim=0, keepdim=True)
    clip_feats = clip_feats**3
    target_feats = target_feats**3
    clip_feats = clip_feats / torch.clip(torch.norm(clip_feats, p=2, dim=0, keepdim=True), min_norm)
    target_feats = target_feats / torch.clip(torch.norm(target_feats, p=2, dim=0, keepdim=True), min_norm)
    return target_feats.T @ clip_feats


def activations(kind, n=1000, units=100, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        return rng.gamma(1.0, 1.0, (n, units)).astype(np.float32)
    if kind == "quantised":                       # 8 levels: hundreds of images tie at each level
        return np.floor(rng.gamma(1.0, 1.0, (n, units)) * 2).clip(0, 7).astype(np.float32)
    # ReLU-sparse: about 7% of images fire; the rest of each unit's top 100 are tied at 0
    return np.maximum(rng.normal(size=(n, units)) - 1.5, 0).astype(np.float32)


def sims_of(n=1000, concepts=200, seed=1):
    return np.random.default_rng(seed).normal(0.2, 0.05, (n, concepts)).astype(np.float32)


def old_soft_wpmi(sims, acts, top_k=100):
    """fexbench's version-1 scoring: float64, stable argsort (the order of tied images differs)."""
    from scipy.special import logsumexp, softmax
    probs = softmax(10.0 * sims.astype(np.float64), axis=1)
    p = (0.998 - np.arange(top_k) / top_k * 0.028)[:, None]
    given = np.stack([np.log(1 - p + p * probs[np.argsort(-acts[:, k].astype(np.float64), kind="stable")[:top_k]]
                             + 1e-7).sum(axis=0) for k in range(acts.shape[1])])
    return given - (logsumexp(given, axis=0) - np.log(len(given)))


def fexbench_unit_scores(sims, acts, **kw):
    words = tuple(f"c{i}" for i in range(sims.shape[1]))
    probe = Probe(np.zeros((len(acts), 1, 1, 3), np.uint8), acts, np.zeros((len(acts), 2), np.float32),
                  "layer", tuple(map(str, range(len(acts)))))
    context = Context(probe, words)
    explainer = ClipDissectExplainer(**kw).use_similarities(words, sims)
    targets = [Target("unit", k) for k in range(acts.shape[1])]
    return explainer, context, targets, np.stack([explainer.soft_wpmi_scores(t, context)[0] for t in targets])


@pytest.mark.parametrize("kind", ["continuous", "quantised", "relu_sparse"])
def test_soft_wpmi_argmax_equals_the_released_function(kind):
    acts, sims = activations(kind), sims_of()
    released = released_soft_wpmi(torch.from_numpy(sims), torch.from_numpy(acts)).numpy()
    assert released.dtype == np.float32
    explainer, context, targets, ours = fexbench_unit_scores(sims, acts)
    assert ours.dtype == np.float32
    assert np.array_equal(ours, released)                                   # bit for bit
    assert (ours.argmax(axis=1) == released.argmax(axis=1)).all()          # 100 of 100 units
    top1 = [explainer._explain(t, context).concepts[0][0] for t in targets]
    assert top1 == [f"c{i}" for i in released.argmax(axis=1)]
    assert np.array_equal(soft_wpmi(explainer._probs, acts), ours)          # the function = the explainer
    agree_before = int((old_soft_wpmi(sims, acts).argmax(axis=1) == released.argmax(axis=1)).sum())
    print(f"{kind}: top-1 agreement with the released function, version 1 {agree_before}/100, now 100/100")
    if kind == "relu_sparse":
        assert agree_before < 90                                            # what version 1 got wrong


def test_float64_option_keeps_the_released_float32_memberships_and_log_k():
    acts, sims = activations("continuous", n=400, units=30), sims_of(n=400, concepts=50)
    released = released_soft_wpmi(torch.from_numpy(sims.astype(np.float64)),
                                  torch.from_numpy(acts.astype(np.float64))).numpy()
    assert released.dtype == np.float64
    _, _, _, ours = fexbench_unit_scores(sims.astype(np.float64), acts.astype(np.float64), dtype="float64")
    assert ours.dtype == np.float64 and np.abs(ours - released).max() < 1e-9
    with pytest.raises(ValueError, match="'float16'"):
        ClipDissectExplainer(dtype="float16")


@pytest.mark.parametrize("kind", ["continuous", "relu_sparse"])
def test_cos_cubed_equals_the_released_function(kind):
    acts, sims = activations(kind, n=500, units=40), sims_of(n=500, concepts=80)
    released = released_cos_similarity_cubed(torch.from_numpy(sims), torch.from_numpy(acts)).numpy()
    ours = cos_similarity_cubed(sims, acts)
    assert np.abs(ours - released).max() < 1e-6
    assert (ours.argmax(axis=1) == released.argmax(axis=1)).all()
    explainer, context, targets, _ = fexbench_unit_scores(sims, acts, similarity="cos_cubed")
    assert [explainer._explain(t, context).concepts[0][0] for t in targets] == [f"c{i}" for i in released.argmax(1)]


@pytest.mark.parametrize("similarity", ["cos", "cos_cubed"])
def test_a_unit_with_only_non_positive_cosines_gets_its_least_negative_concepts(similarity):
    sims = sims_of(n=200, concepts=30).astype(np.float64)
    target = sims[:, 4] - sims.mean(axis=1)
    acts = np.stack([-(target - target.mean()), target - target.mean()], axis=1)   # unit 0 anti-correlated
    explainer, context, targets, _ = fexbench_unit_scores(sims, acts.astype(np.float32), similarity=similarity,
                                                          n_words=3)
    explanation = explainer._explain(targets[0], context)
    assert len(explanation.concepts) == 3                       # not empty (version 1 gave nothing)
    weights = [w for _, w in explanation.concepts]
    assert weights[0] == 1.0 and all(0 < w <= 1 for w in weights) and weights == sorted(weights, reverse=True)
    assert explainer._explain(targets[1], context).concepts[0][0] == "c4"
    assert math.isclose(explainer._explain(targets[1], context).concepts[0][1], 1.0)
