"""The synthetic world is deterministic, its counterfactuals are exact, and its layouts say what they hold."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fexbench.data import world
from fexbench.data.imageset import DataError


def random_scenes(n: int, seed: int = 0) -> world.Scenes:
    scenes, _ = world.imagenet9_scenes(n, seed, p_native=0.0)
    return scenes


def test_same_arguments_give_identical_sets_and_a_new_seed_changes_them():
    a = world.waterbirds_set(40, rho=0.9, seed=3)
    b = world.waterbirds_set(40, rho=0.9, seed=3)
    c = world.waterbirds_set(40, rho=0.9, seed=4)
    assert a.content_hash == b.content_hash and a.captions == b.captions
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions


@pytest.mark.parametrize("size", [16, 32, 45, 96])  # 96: renders in several batches
def test_any_subset_rerenders_byte_for_byte(size):
    scenes = random_scenes(30)
    images, masks = world.render(scenes, size)
    assert images.shape == (30, size, size, 3) and images.dtype == np.uint8
    index = np.array([7, 0, 29, 7])
    sub_images, sub_masks = world.render(scenes.subset(index), size)
    assert np.array_equal(sub_images, images[index]) and np.array_equal(sub_masks, masks[index])


def test_objects_are_inside_the_image_and_not_flat():
    scenes = random_scenes(60)
    images, masks = world.render(scenes)
    area = masks.sum(axis=(1, 2))
    assert area.min() > 10
    assert not masks[:, 0, :].any() and not masks[:, -1, :].any()
    assert not masks[:, :, 0].any() and not masks[:, :, -1].any()
    assert all(images[i][masks[i]].std(axis=0).max() > 1 for i in range(60))
    assert all(images[i][~masks[i]].std(axis=0).max() > 3 for i in range(60))


def test_background_swap_changes_only_background_pixels():
    scenes = random_scenes(36)
    other = (scenes.background + 1 + np.arange(36) % 8) % len(world.BACKGROUNDS)
    images, masks = world.render(scenes)
    swapped, swapped_masks = world.render(scenes.with_background(other))
    assert np.array_equal(masks, swapped_masks)
    assert np.array_equal(images[masks], swapped[masks])
    changed = (images != swapped).any(axis=-1)[~masks]
    assert changed.mean() > 0.9


def test_new_texture_seed_keeps_the_object():
    scenes = random_scenes(10)
    images, masks = world.render(scenes)
    reseeded, _ = world.render(scenes.with_background(scenes.background, scenes.bg_seed + 1))
    assert np.array_equal(images[masks], reseeded[masks])
    assert (images != reseeded).any(axis=-1)[~masks].mean() > 0.5


def test_swap_place_flips_the_group_and_keeps_the_object():
    scenes, _, place = world.waterbirds_scenes(40, rho=0.5, seed=1)
    swapped = world.swap_place(scenes, place, seed=2)
    groups = [world.BACKGROUND_GROUP[world.BACKGROUNDS[b]] for b in swapped.background]
    assert groups == [world.PLACES[1 - p] for p in place]
    for field in ("shape", "colour", "size", "cx", "cy", "angle", "obj_seed"):
        assert np.array_equal(getattr(scenes, field), getattr(swapped, field))
    with pytest.raises(DataError):
        world.swap_place(scenes, 1 - place, seed=2)


def test_variants_blank_what_the_challenge_blanks():
    scenes, labels = world.imagenet9_scenes(27, seed=5)
    original, masks = world.render(scenes)
    variant = {v: world.render_variant(scenes, v, seed=9)[0] for v in world.VARIANTS}
    outside, inside = ~masks, masks

    assert np.array_equal(variant["original"], original)
    assert not variant["only_fg"][outside].any()
    assert np.array_equal(variant["only_fg"][inside], original[inside])
    assert not variant["no_fg"][inside].any()
    assert np.array_equal(variant["no_fg"][outside], original[outside])
    # only_bg_t is the background as if the object were absent: it matches the original outside
    # the object, and it is exactly what a background swap back to the same texture would show.
    assert np.array_equal(variant["only_bg_t"][outside], original[outside])
    assert (variant["only_bg_t"][inside] != original[inside]).any()
    for i in range(len(scenes)):
        rows, cols = np.nonzero(masks[i])
        box = np.zeros_like(masks[i])
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert not variant["only_bg_b"][i][box].any()
        assert np.array_equal(variant["only_bg_b"][i][~box], variant["only_bg_t"][i][~box])
    for mixed in ("mixed_same", "mixed_rand", "mixed_next"):
        assert np.array_equal(variant[mixed][inside], original[inside])


def test_mixed_variants_record_where_the_background_came_from():
    scenes, labels = world.imagenet9_scenes(45, seed=6)
    natives = np.asarray(world.CLASS_BACKGROUND)
    _, nxt = world.render_variant(scenes, "mixed_next", seed=1)
    assert np.array_equal(nxt["bg_source_class"], (labels + 1) % 9)
    assert np.array_equal(nxt["background"], natives[(labels + 1) % 9])
    _, same = world.render_variant(scenes, "mixed_same", seed=1)
    assert np.array_equal(same["background"], scenes.background)
    assert not np.any(same["bg_seed"] == scenes.bg_seed)
    _, rand = world.render_variant(scenes, "mixed_rand", seed=1)
    assert np.array_equal(rand["background"], natives[rand["bg_source_class"]])
    assert len(set(rand["bg_source_class"].tolist())) > 3

    mixed = world.imagenet9_set(45, seed=6, variant="mixed_next")
    assert mixed.metadata_values["bg_source_class"] == world.SHAPES
    assert np.array_equal(mixed.field("bg_source_class"), (mixed.labels + 1) % 9)
    assert np.array_equal(mixed.field("background"), natives[(mixed.labels + 1) % 9])
    with pytest.raises(DataError):
        world.render_variant(scenes, "mixed_other", seed=1)


def test_imagenet9_classes_sit_on_their_native_background():
    s = world.imagenet9_set(60, seed=2)
    assert s.class_names == world.SHAPES
    assert np.array_equal(s.field("shape"), s.labels)
    assert np.array_equal(s.field("background"), np.asarray(world.CLASS_BACKGROUND)[s.labels])
    assert "bg_source_class" not in s.metadata
    assert world.imagenet9_set(12, seed=2, variant="only_fg").captions is None
    assert sorted(world.CLASS_BACKGROUND) == list(range(9))


def test_balanced_waterbirds_has_equal_groups():
    s = world.waterbirds_set(48, rho=0.95, seed=0, balanced=True)
    assert np.bincount(s.groups(("y", "place")), minlength=4).tolist() == [12, 12, 12, 12]
    with pytest.raises(DataError):
        world.waterbirds_set(50, rho=0.95, seed=0, balanced=True)


def test_rho_sets_how_often_place_follows_the_label():
    _, labels, place = world.waterbirds_scenes(4000, rho=0.9, seed=11)
    assert 0.88 <= np.mean(place == labels) <= 0.92
    assert 0.46 <= labels.mean() <= 0.54
    _, labels, place = world.waterbirds_scenes(4000, rho=0.5, seed=11)
    assert 0.47 <= np.mean(place == labels) <= 0.53


def test_waterbirds_fields_agree_with_the_scenes():
    s = world.waterbirds_set(64, rho=0.7, seed=8, name="wb")
    assert s.class_names == ("angular", "round")
    assert set(s.metadata) == {"place", "background", "shape", "colour", "size"}
    assert s.metadata_values["place"] == ("land", "water")
    assert s.ids[0] == "wb-000000" and s.provenance["world"] == "waterbirds-style"
    shapes = np.asarray(world.CLASS_SHAPES)
    assert all(s.field("shape")[i] in shapes[s.labels[i]] for i in range(64))
    groups = [world.BACKGROUND_GROUP[world.BACKGROUNDS[b]] for b in s.field("background")]
    assert groups == [world.PLACES[p] for p in s.field("place")]


def test_captions_name_the_colour_shape_and_background():
    scenes = random_scenes(200)
    texts = world.captions(scenes, seed=1)
    assert texts == world.captions(scenes, seed=1) and texts != world.captions(scenes, seed=2)
    for i, text in enumerate(texts):
        assert world.COLOUR_NAMES[scenes.colour[i]] in text
        assert any(form in text for form in world.SYNONYMS[world.SHAPES[scenes.shape[i]]])
        assert any(form in text for form in world.SYNONYMS[world.BACKGROUNDS[scenes.background[i]]])
        others = [f for s in world.SHAPES if s != world.SHAPES[scenes.shape[i]] for f in world.SYNONYMS[s]]
        assert not any(re.search(rf"\b{form}\b", text) for form in others), text
    assert len(set(texts)) > 150
    assert any(" an orange " in f" {t} " for t in texts) and not any(" a orange " in t for t in texts)


def test_the_nine_backgrounds_have_clearly_different_mean_colours():
    n = len(world.BACKGROUNDS)
    scenes = random_scenes(n * 4).with_background(np.repeat(np.arange(n), 4))
    backgrounds, _ = world.render_variant(scenes, "only_bg_t", seed=0)
    means = backgrounds.reshape(n, -1, 3).mean(axis=1)
    distance = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert distance[~np.eye(n, dtype=bool)].min() > 30
