"""FALCON: word scoring and the contrastive step by hand, groups, Grad-CAM crops, a planted unit.

The planted subject is hand-built, not trained: its penultimate unit k is the spatial max of a
detector of colour k (an RBF around the world's RGB value of that colour), so unit 0 fires exactly
on red objects and class 0's logit is unit 0. A unit planted this way must be explained with "red".
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fexbench.data import world
from fexbench.resources.clip import EmbeddedClipConfig, load_or_train_embedded
from fexbench.core.contract import Context, Probe, Subject, Target
from fexbench.models.gradcam import cam_crops, grad_cam, largest_box
from fexbench.models.subjects import TorchClassifier
from fexbench.data.world_concepts import world_vocabulary
from fexbench.explainers.falcon import (FalconExplainer, caption_words, class_contributions, contrast, feature_groups,
                               word_scores)

# A CLIP big enough to tell colours apart, trained once and kept in pytest's cache (content-keyed).
TEST_CLIP = EmbeddedClipConfig(n_pairs=4000, epochs=8, seed=0)


@pytest.fixture(scope="session")
def small_clip(request):
    clip = load_or_train_embedded(Path(request.config.cache.mkdir("fexbench-test-clip")), TEST_CLIP)
    assert clip.card["zero_shot_accuracy"]["colour"] > 0.8, clip.card  # the planted tests need colours
    return clip


class ColourDetectors(nn.Module):
    """Per pixel, unit k = relu(1 - |rgb - colour_k| / width): one map per world colour."""

    def __init__(self, width: float = 0.3):
        super().__init__()
        self.register_buffer("colours", torch.tensor(list(world.COLOURS.values()), dtype=torch.float32) / 255)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x[:, None] - self.colours[None, :, :, None, None]).pow(2).sum(dim=2).add(1e-8).sqrt()
        return torch.relu(1 - dist / self.width)


class SpatialMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.detect, self.pool = ColourDetectors(), SpatialMax()
        self.head = nn.Linear(len(world.COLOURS), 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0, 0] = 1.0   # class 0 <- the red unit
            self.head.weight[1, 2] = 1.0   # class 1 <- the blue unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.detect(x)))


def _to_unit_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def planted_case(clip, tmp_path: Path, n: int = 480, seed: int = 7):
    model = TorchClassifier(Planted(), {"conv": "detect", "penultimate": "pool", "logits": "logits"},
                            _to_unit_range, conv_layer="conv")
    model.n_units = len(world.COLOURS)
    probe = world.imagenet9_set(n, seed, p_native=0.0)
    acts = model.activations(probe.images, ("penultimate", "logits"))
    subject = Subject("planted", model, ("red-ish", "blue-ish"), "planted-weights")
    context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                      vocabulary=tuple(world_vocabulary().words()), resources={"clip": clip},
                      cache_dir=tmp_path / "cache")
    return subject, context


# ---------------------------------------------------------------- by hand

def test_caption_words_follow_falcons_cleaning():
    words = caption_words("A photo of 2 small Red disks, on the sea's waves -- 3d background!")
    assert words == {"red", "disk", "sea", "wave"}  # stop, discard (photo, small, background), digits, lemmas


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
                            _to_unit_range, conv_layer="conv")
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
