"""FALCON: word scoring and the contrastive step by hand, groups, Grad-CAM crops, a planted unit.

The planted subject (tests/planted.py) is hand-built, not trained: unit 0 fires exactly on red
objects and class 0's logit is unit 0, so it must be explained with "red".
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fexbench.core.contract import Target
from fexbench.data import world
from fexbench.explainers.falcon import (FalconExplainer, caption_words, class_contributions, contrast, feature_groups,
                                        stop_word_set, word_scores)
from fexbench.models.gradcam import cam_crops, grad_cam, largest_box
from fexbench.models.subjects import TorchClassifier
from planted import Planted, planted_case, to_unit_range

# ---------------------------------------------------------------- by hand

def test_caption_words_follow_falcons_cleaning():
    words = caption_words("A photo of 2 small Red disks, on the sea's waves -- 3d background!")
    assert words == {"red", "disk", "sea", "wave"}  # stop, discard (photo, small, background), digits, lemmas


def test_default_words_drop_exactly_the_released_stop_and_discard_lists():
    # Released falcon_utils.py: NLTK's 179 English stop words and `_DISCARD_WORDS` (107 distinct
    # entries, "http" among them; " pre " is padded with spaces, so the token "pre" survives).
    stop = stop_word_set(FalconExplainer().stop_words)
    words = caption_words("a red cross in front of the top side, behind fire and thin pre http www smaller",
                          stop)
    assert words == {"red", "cross", "front", "top", "side", "behind", "fire", "thin", "pre"}
    from fexbench.data.nltk_stopwords import NLTK_ENGLISH_STOP_WORDS
    from fexbench.explainers.falcon import FALCON_DISCARD
    assert len(set(NLTK_ENGLISH_STOP_WORDS)) == 179 and len(FALCON_DISCARD) == 107
    for word in set(NLTK_ENGLISH_STOP_WORDS) | FALCON_DISCARD:   # every entry that can be a token is dropped
        if word.isalpha():  # not "don't" (apostrophes are removed first, as released), " pre ", "close up"
            assert not caption_words(word, stop), word
    # ... and nothing else: scikit-learn's extra stop words of three letters or more are kept
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    extra = sorted(w for w in set(ENGLISH_STOP_WORDS) - stop if len(w) > 2)
    kept = {w for w in extra if caption_words(w, stop)}
    assert {"front", "top", "back", "side", "behind", "fire", "thin"} <= kept
    lost = set(extra) - kept   # only words whose lemma is a stop word ("others" -> other)
    assert all(not caption_words(w, stop) and w not in stop for w in lost), lost
    assert len(lost) < 10, lost
    sklearn_words = caption_words("a red cross in front of the top side", stop_word_set("sklearn"))
    assert sklearn_words == {"red", "cross"}
    with pytest.raises(ValueError, match="stop_words"):
        FalconExplainer(stop_words="spacy")


def test_word_score_is_the_mean_over_images_of_the_best_caption_score():
    captions = [["a red disk on lava", "a red ring on sand"], ["a blue disk on lava", "a red star"]]
    scores = [[0.6, 0.3], [0.5, 0.2]]
    got = word_scores(captions, scores)
    assert got["red"] == pytest.approx((0.6 + 0.2) / 2)
    assert got["disk"] == pytest.approx((0.6 + 0.5) / 2)
    assert got["sand"] == pytest.approx(0.3 / 2)
    assert got["blue"] == pytest.approx(0.5 / 2)


def test_contrast_removes_a_word_shared_by_high_and_low_sets():
    high = word_scores([["a red disk on lava"], ["a red disk on lava"]], [[0.8], [0.6]])
    low = word_scores([["a blue ring on lava"], ["a green star on sand"]], [[0.5], [0.9]])
    assert low["lava"] == pytest.approx(0.25) and low["ring"] == pytest.approx(0.25)
    kept = dict(contrast(high, low, threshold=0.1))
    assert "lava" not in kept                       # shared with the low set (0.25 >= 0.1): removed
    assert kept == {"red": pytest.approx(0.7), "disk": pytest.approx(0.7)}
    weak_low = word_scores([["a blue ring on lava"]], [[0.05]])
    assert "lava" in dict(contrast(high, weak_low, threshold=0.1))  # below the threshold: kept
    assert len(contrast({f"w{i}": 1.0 / (i + 1) for i in range(20)}, {}, top=8)) == 8


def test_feature_groups_are_exact_sets_of_high_features():
    high = np.zeros((30, 4), dtype=bool)
    high[:12, 0] = True            # 12 images with {0}
    high[12:24, [1, 2]] = True     # 12 images with {1, 2}
    high[24:, 3] = True            # 6 images with {3}: too few
    groups = feature_groups(high, min_group_size=10)
    assert set(groups) == {(0,), (1, 2)}
    assert list(groups[(1, 2)]) == list(range(12, 24))


def test_grad_cam_finds_the_planted_object_and_crops_to_it():
    images = world.imagenet9_set(6, 3, p_native=0.0).images
    scenes, _ = world.imagenet9_scenes(6, 3, p_native=0.0)
    masks = world.render(scenes, 32)[1]
    model = TorchClassifier(Planted(), {"conv": "detect", "penultimate": "pool", "logits": "logits"},
                            to_unit_range, conv_layer="conv")
    for i in range(len(images)):
        unit = int(scenes.colour[i])
        cam = grad_cam(model, images[i:i + 1], lambda f: f[:, unit], "penultimate")[0]
        assert cam.shape == (32, 32) and cam.min() >= 0 and cam.max() == pytest.approx(1, abs=1e-5)
        assert masks[i][np.unravel_index(np.argmax(cam), cam.shape)]  # the peak lies on the object
        top, bottom, left, right = largest_box(cam >= 0.6)
        assert masks[i][top:bottom, left:right].mean() > 0.3  # the box is mostly object
    crops, boxes = cam_crops(images[:2], np.ones((2, 32, 32)), 0.6, size=16)
    assert crops.shape == (2, 16, 16, 3) and boxes[0] == (0, 32, 0, 32)


def test_largest_box_picks_the_largest_island():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:2, 0:2] = True
    mask[4:9, 3:7] = True
    assert largest_box(mask) == (4, 9, 3, 7)
    assert largest_box(np.zeros((4, 5), dtype=bool)) == (0, 4, 0, 5)


def test_class_contributions_are_weight_times_activation_for_a_linear_head(tmp_path):
    subject, context = planted_case(None, tmp_path, n=120)
    contrib = class_contributions(subject, context, batch_size=50)  # several batches
    weight = subject.model.module.head.weight.detach().numpy()
    feats, pred = context.probe.features, context.probe.predictions
    for c in range(2):
        expected = weight[c] * feats[pred == c].mean(axis=0)
        assert np.allclose(contrib[c], expected, atol=1e-5)
    assert np.argmax(contrib[0]) == 0 and np.argmax(contrib[1]) == 2  # red unit -> class 0, blue -> class 1


# ---------------------------------------------------------------- end to end on a planted unit

def test_planted_red_unit_gets_red_among_falcons_top_words(tmp_path, small_clip):
    subject, context = planted_case(small_clip, tmp_path)
    direction = tuple(np.eye(subject.model.n_units)[0])
    targets = (Target("unit", 0), Target("class", 0, "red-ish"), Target("direction", direction=direction))
    explainer = FalconExplainer(clip_model="resource", explain_uninterpretable=True).fit(subject, context)
    unit, cls, along = explainer.explain(subject, targets, context)
    assert "red" in unit.words(3), (unit.concepts, unit.evidence)
    assert "red" in cls.words(3), (cls.concepts, cls.evidence)
    assert along.words() == unit.words()  # a direction along unit 0 is unit 0
    assert all(math.isfinite(w) and w >= 0 for _, w in unit.concepts)
    assert explainer.stats_["candidates"] >= 3
    assert any("mean crop cosine" in line for line in unit.evidence)
