"""TExplain: a linear translator is the only thing fit trains; sampling is seeded; words are counted as content lemmas."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fexbench.resources import captioner as C
from fexbench.core import registry
from fexbench.data import world
from fexbench.core.contract import Context, Explanation, Probe, Subject, Target
from fexbench.models.subjects import TrainConfig, small_cnn_classifier, train_cnn
from fexbench.explainers.texplain import TExplain, TExplainContrast, Translator, word_frequencies

TINY_CAPTIONER = C.CaptionerConfig(n_train=96, captions_per_image=1, epochs=1, batch_size=32, n_embd=16, n_layer=1,
                                   n_head=2, encoder_width=4, n_heldout=16)
FAST = dict(n_sentences=60, batch_size=32, n_fit=64, fit_epochs=2, fit_batch_size=32, hidden=24, max_tokens=12)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("texplain")
    cap = C.embedded_captioner(root / "cache", TINY_CAPTIONER)
    module = train_cnn(world.waterbirds_set(400, 0.5, seed=5), TrainConfig(2, width=8, hidden=8, epochs=4, lr=1e-2),
                       progress=False)
    subject = Subject("tiny", small_cnn_classifier(module), ("angular", "round"), weights_hash="tiny-weights")
    probe_set = world.waterbirds_set(32, 0.5, seed=11, balanced=True)
    acts = subject.model.activations(probe_set.images)
    probe = Probe(probe_set.images, acts["penultimate"], acts["logits"], "penultimate", probe_set.ids)
    context = Context(probe, vocabulary=(), resources={"captioner": cap}, seed=0, cache_dir=root / "cache")
    return cap, subject, context


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_translator_is_three_linear_layers_and_a_linear_map():
    t = Translator(8, 16, 3, 5)
    with_params = [m for m in t.modules() if list(m.parameters(recurse=False))]
    assert len(with_params) == 3 and all(isinstance(m, nn.Linear) for m in with_params)
    assert not any(isinstance(m, (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.LayerNorm)) for m in t.modules())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        t.scale.copy_(torch.rand(8, generator=g) + 0.5)
        x, y = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
        a = 0.3
        mixed = t(a * x + (1 - a) * y)  # affine: mixtures map to mixtures
        assert torch.allclose(mixed, a * t(x) + (1 - a) * t(y), atol=1e-5)
        assert t(x).shape == (4, 3, 5)


def test_fit_trains_only_the_translator(setup):
    cap, subject, context = setup
    decoder_before, encoder_before = state(cap.decoder), state(cap.image_encoder)
    subject_before = state(subject.model.module)
    explainer = TExplain(**FAST).fit(subject, context)
    assert not explainer.fit_report["cached"]
    assert explainer.fit_report["final_loss"] < explainer.fit_report["first_loss"]
    for before, module in ((decoder_before, cap.decoder), (encoder_before, cap.image_encoder),
                           (subject_before, subject.model.module)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    trained = {n for n, p in explainer._translator.named_parameters()}
    assert trained == {f"layers.{i}.{w}" for i in range(3) for w in ("weight", "bias")}


def test_translator_is_cached_by_subject_and_config(setup):
    cap, subject, context = setup
    TExplain(**FAST).fit(subject, context)
    again = TExplain(**FAST).fit(subject, context)
    assert again.fit_report["cached"]
    other = dataclasses.replace(subject, weights_hash="other-weights")
    assert not TExplain(**FAST).fit(other, context).fit_report["cached"]


def test_explain_answers_every_target_kind_with_normalised_frequencies(setup):
    cap, subject, context = setup
    targets = [Target("class", 0, "angular"), Target("class", 1, "round"), Target("unit", 3, "unit3"),
               Target("direction", 0, "d0", direction=tuple(np.linspace(-1, 1, 8)))]
    out = TExplain(**FAST).fit(subject, context).explain(subject, targets, context)
    assert [e.target for e in out] == targets
    for e in out:
        assert isinstance(e, Explanation) and e.concepts
        assert sum(e.weights.values()) == pytest.approx(1.0)
        assert not {"a", "the", "on", "of", "photo", "picture"} & set(e.weights)
        assert e.evidence and all(": " in line for line in e.evidence)


def test_the_same_seed_samples_the_same_sentences(setup, tmp_path):
    cap, subject, context = setup
    target = [Target("class", 1, "round")]
    a = TExplain(**FAST).fit(subject, context).explain(subject, target, context)[0]
    fresh = dataclasses.replace(context, cache_dir=tmp_path)  # nothing cached: sampled again
    b = TExplain(**FAST).fit(subject, fresh).explain(subject, target, fresh)[0]
    assert a.concepts == b.concepts and a.evidence == b.evidence
    c = TExplain(**FAST).fit(subject, dataclasses.replace(fresh, seed=1)).explain(
        subject, target, dataclasses.replace(fresh, seed=1))[0]
    assert c.evidence != a.evidence


def test_class_targets_pool_the_images_predicted_as_the_class(setup):
    cap, subject, context = setup
    explainer = TExplain(**FAST)
    for c in (0, 1):
        predicted = np.flatnonzero(context.probe.predictions == c)
        assert len(predicted) and np.array_equal(explainer.target_images(Target("class", c), context), predicted)
    # a class nobody is predicted as falls back to its most class-like images
    logits = context.probe.logits.copy()
    logits[:, 1] = logits[:, 0] - 1 - np.arange(len(logits))
    lonely = dataclasses.replace(context, probe=dataclasses.replace(context.probe, logits=logits))
    assert np.array_equal(explainer.target_images(Target("class", 1), lonely), np.arange(round(0.1 * len(logits))))
    unit = explainer.target_images(Target("unit", 2), context)
    acts = context.probe.features[:, 2]
    assert len(unit) == round(0.1 * len(acts)) and acts[unit].min() >= np.sort(acts)[-len(unit)]


def test_word_counting_drops_stop_words_and_merges_inflections():
    freq = word_frequencies(["The stars are over the seas", "a star on the sea", "a photo of rocks and a rock"])
    assert freq["star"] == pytest.approx(2 / 6) and freq["sea"] == pytest.approx(2 / 6)
    assert freq["rock"] == pytest.approx(2 / 6)
    assert not {"the", "are", "over", "a", "on", "of", "and", "photo", "stars", "seas"} & set(freq)
    assert word_frequencies([]) == {}


def test_contrast_subtracts_the_reference_and_keeps_weights_non_negative(setup):
    cap, subject, context = setup
    targets = [Target("class", 0, "angular"), Target("class", 1, "round")]
    plain = TExplain(**FAST).fit(subject, context).explain(subject, targets, context)
    contrast = TExplainContrast(**FAST).fit(subject, context).explain(subject, targets, context)
    for p, q in zip(plain, contrast):
        assert all(w >= 0 for w in q.weights.values())
        assert set(q.weights) <= set(p.weights)
        assert sum(q.weights.values()) < sum(p.weights.values())
    # the same sentences (shared cache), so a word's contrast is its plain frequency minus the other class's
    assert set(context.probe.predictions) == {0, 1}
    for c in (0, 1):
        expected = {w: f - plain[1 - c].weights.get(w, 0.0) for w, f in plain[c].weights.items()}
        expected = {w: v for w, v in expected.items() if v > 0}
        assert contrast[c].weights == pytest.approx(expected)
    with pytest.raises(ValueError, match="reference"):
        TExplainContrast(reference="nothing")


def test_contrast_reference_of_a_class_is_the_image_weighted_mix_of_the_other_classes(setup, monkeypatch):
    """Three classes split the probe, a fourth is never predicted: no sentences are sampled for the
    references. A predicted class's reference is the other classes' per-sentence word counts,
    weighted by their image counts; the never-predicted class's is the mix of all three."""
    from collections import Counter

    from fexbench.data.concepts import content_words

    cap, subject, context = setup
    n = len(context.probe.features)
    logits = np.zeros((n, 4), np.float32)
    logits[np.arange(n), np.arange(n) % 3] = 1.0
    logits[:5] = [0, 0, 1, 0]  # unequal class sizes, so the weighting matters
    probe = dataclasses.replace(context.probe, logits=logits)
    ctx = dataclasses.replace(context, probe=probe)
    targets = [Target("class", c, f"c{c}") for c in range(4)]
    calls = []
    real_sample = cap.sample
    monkeypatch.setattr(cap, "sample", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    explainer = TExplainContrast(**FAST).fit(subject, ctx)
    out = explainer.explain(subject, targets, ctx)
    assert len(calls) <= 4  # one round per class target, none for the references
    features = ctx.probe.features
    cells = []
    for c in range(3):
        texts, _ = explainer.sentences(features, np.flatnonzero(probe.predictions == c), ctx)
        counts = Counter(w for text in texts for w in content_words(text))
        cells.append((int((probe.predictions == c).sum()), {w: k / len(texts) for w, k in counts.items()}))
    assert len({n_images for n_images, _ in cells}) > 1
    for c, exp in enumerate(out):
        mix = Counter()
        for k, (n_images, per_sentence) in enumerate(cells):
            if k != c:
                for w, v in per_sentence.items():
                    mix[w] += n_images * v
        total = sum(mix.values())
        texts, _ = explainer.sentences(features, explainer.target_images(targets[c], ctx), ctx)
        freq = word_frequencies(texts)
        expected = {w: f - mix[w] / total for w, f in freq.items() if f > mix[w] / total}
        assert exp.weights == pytest.approx(expected)


def test_a_fit_data_file_without_captions_is_named(setup, tmp_path):
    from fexbench.data.imageset import DataError, save_imageset
    cap, subject, context = setup
    data = world.waterbirds_set(8, 0.5, seed=1)
    path = save_imageset(tmp_path / "nocap.safetensors", dataclasses.replace(data, captions=None))
    with pytest.raises(DataError, match="nocap.safetensors"):
        TExplain(**{**FAST, "fit_data": str(path)}).fit(subject, context)


def test_registered_and_drawable(setup, tmp_path):
    from fexbench.report.wordcloud_png import word_cloud_png
    assert registry.explainers.get("texplain") is TExplain
    assert registry.explainers.get("texplain-contrast") is TExplainContrast
    cap, subject, context = setup
    e = TExplain(**FAST).fit(subject, context).explain(subject, [Target("class", 1, "round")], context)[0]
    png = word_cloud_png(e, tmp_path / "cloud.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
