"""The Waterbirds loader reads the WILDS layout faithfully and names the culprit when it cannot."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_waterbirds_fixture
from fexbench.core.contract import Environment, Subject
from fexbench.data.imageset import DataError
from fexbench.data.waterbirds_wilds import load_waterbirds, train_group_counts
from fexbench.models.subjects import TorchClassifier
from fexbench.tasks.waterbirds import WaterbirdsSpurious

SIZE = 32


def read_rows(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_rows(root: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("split, code", [("train", 0), ("val", 1), ("test", 2)])
def test_each_split_matches_metadata(waterbirds_root, split, code):
    expected = [r for r in read_rows(waterbirds_root) if int(r["split"]) == code]
    ds = load_waterbirds(waterbirds_root, split, image_size=SIZE)

    assert len(ds) == len(expected) == 8  # 4 groups x 2 images
    assert ds.name == f"waterbirds-{split}"
    assert ds.images.shape == (8, SIZE, SIZE, 3) and ds.images.dtype == np.uint8
    assert ds.ids == tuple(r["img_filename"] for r in expected)
    assert ds.class_names == ("landbird", "waterbird")
    np.testing.assert_array_equal(ds.labels, [int(r["y"]) for r in expected])
    np.testing.assert_array_equal(ds.field("place"), [int(r["place"]) for r in expected])
    assert ds.metadata_values["place"] == ("land", "water")

    groups = ds.groups(("y", "place"))
    np.testing.assert_array_equal(groups, 2 * ds.labels + ds.field("place"))
    assert np.bincount(groups, minlength=4).tolist() == [2, 2, 2, 2]

    species = ds.metadata_values["species"]
    all_species = sorted({r["img_filename"].split("/")[0] for r in read_rows(waterbirds_root)})
    assert species == tuple(all_species)  # codes agree across splits
    assert [species[c] for c in ds.field("species")] == [i.split("/")[0] for i in ds.ids]

    digest = hashlib.sha256((waterbirds_root / "metadata.csv").read_bytes()).hexdigest()
    assert ds.provenance["source"] == "waterbirds-wilds"
    assert ds.provenance["root"] == str(waterbirds_root)
    assert ds.provenance["metadata_sha256"] == digest
    assert ds.provenance["split"] == split


def test_pixels_follow_their_rows(waterbirds_root):
    """Fixture backgrounds are bluish on water, greenish on land: images are not shuffled."""
    ds = load_waterbirds(waterbirds_root, "train", image_size=SIZE)
    corner = ds.images[:, :4, :4].astype(float).mean(axis=(1, 2))  # background only
    is_water = corner[:, 2] > corner[:, 1]
    np.testing.assert_array_equal(is_water, ds.field("place") == 1)


def test_limit_spreads_over_the_split(waterbirds_root):
    full = load_waterbirds(waterbirds_root, "test", image_size=SIZE)
    part = load_waterbirds(waterbirds_root, "test", image_size=SIZE, limit=3)
    assert len(part) == 3
    assert part.ids[0] == full.ids[0] and part.ids[-1] == full.ids[-1]
    assert load_waterbirds(waterbirds_root, "test", image_size=SIZE, limit=100).ids == full.ids


def test_bad_arguments(waterbirds_root):
    with pytest.raises(ValueError, match="split"):
        load_waterbirds(waterbirds_root, "validation")
    with pytest.raises(ValueError, match="limit"):
        load_waterbirds(waterbirds_root, "val", limit=0)


def test_missing_column_is_named(waterbirds_root):
    rows = read_rows(waterbirds_root)
    columns = [c for c in rows[0] if c != "place"]
    write_rows(waterbirds_root, rows, columns)
    with pytest.raises(DataError, match="missing column") as err:
        load_waterbirds(waterbirds_root, "train", image_size=SIZE)
    message = str(err.value)
    assert "metadata.csv" in message and "'place'" in message and "img_filename" in message


def test_out_of_range_code_names_row_and_field(waterbirds_root):
    rows = read_rows(waterbirds_root)
    rows[4]["y"] = "7"
    write_rows(waterbirds_root, rows)
    with pytest.raises(DataError) as err:
        load_waterbirds(waterbirds_root, "train", image_size=SIZE)
    message = str(err.value)
    assert "metadata.csv" in message and "row 5" in message and "'y'" in message and "7" in message


def test_non_integer_code_names_row_and_field(waterbirds_root):
    rows = read_rows(waterbirds_root)
    rows[0]["split"] = "train"
    write_rows(waterbirds_root, rows)
    with pytest.raises(DataError, match=r"row 1 .*'split'.*not an integer"):
        load_waterbirds(waterbirds_root, "val", image_size=SIZE)


def test_missing_image_is_named(waterbirds_root):
    victim = read_rows(waterbirds_root)[0]
    path = waterbirds_root / victim["img_filename"]
    path.unlink()
    split = {"0": "train", "1": "val", "2": "test"}[victim["split"]]
    with pytest.raises(DataError, match="not found") as err:
        load_waterbirds(waterbirds_root, split, image_size=SIZE)
    assert str(path) in str(err.value)


def test_corrupt_image_is_named(waterbirds_root):
    victim = read_rows(waterbirds_root)[-1]
    path = waterbirds_root / victim["img_filename"]
    path.write_bytes(b"this is not a JPEG" * 10)
    split = {"0": "train", "1": "val", "2": "test"}[victim["split"]]
    with pytest.raises(DataError, match="cannot be decoded") as err:
        load_waterbirds(waterbirds_root, split, image_size=SIZE)
    assert str(path) in str(err.value)


def test_missing_root_and_metadata_are_named(tmp_path):
    missing = tmp_path / "no_such_waterbirds"
    with pytest.raises(DataError) as err:
        load_waterbirds(missing, "train")
    assert str(missing) in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load_waterbirds(empty, "train")
    assert str(empty / "metadata.csv") in str(err.value)


class PlaceReader(torch.nn.Module):
    """Says waterbird when an image is bluer than it is green: it reads the background, not the bird."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3))
        return torch.stack([m[:, 1] - m[:, 2], m[:, 2] - m[:, 1]], dim=1)


def test_adj_avg_acc_weights_group_accuracies_by_training_counts(tmp_path):
    root = write_waterbirds_fixture(tmp_path / "waterbirds_v1.0", n_per_group=3)
    # an unbalanced train split, as in the release (landbird/land 3, landbird/water 1, waterbird/land 1, waterbird/water 2)
    wanted, kept = {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2}, []
    for row in read_rows(root):
        key = (int(row["y"]), int(row["place"]))
        if int(row["split"]) != 0 or wanted[key] > 0:
            kept.append(row)
            wanted[key] -= int(row["split"]) == 0
    write_rows(root, kept)
    np.testing.assert_array_equal(train_group_counts(root), [3, 1, 1, 2])

    test = load_waterbirds(root, "test", image_size=SIZE)
    to_tensor = lambda images: torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    subject = Subject("place-reader", TorchClassifier(PlaceReader(), {"logits": "logits"}, to_tensor),
                      ("landbird", "waterbird"), "place-reader-v1")
    task = WaterbirdsSpurious(data={"source": "wilds", "root": str(root), "image_size": SIZE})
    out = task._measure(Environment(cache_dir=tmp_path / "cache", progress=False), subject, test, None)

    # by hand: predictions from the pixels, accuracies per (y, place), weights counted from the csv
    images = test.images.astype(np.float64)
    pred = (images[..., 2].mean(axis=(1, 2)) > images[..., 1].mean(axis=(1, 2))).astype(int)
    correct = pred == test.labels
    place = test.field("place")
    weights = {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2}
    acc = {g: correct[(test.labels == g[0]) & (place == g[1])].mean() for g in weights}
    hand = sum(weights[g] * acc[g] for g in weights) / sum(weights.values())
    release = dict(zip(weights, (3498, 184, 56, 1057)))  # WILDS 2.0.0 weights by the release's fixed counts
    wilds = sum(release[g] * acc[g] for g in release) / sum(release.values())
    assert out["avg_acc"] == pytest.approx(correct.mean())
    assert out["adj_avg_acc"] == pytest.approx(wilds)  # WILDS' own adj_acc_avg
    assert out["metadata_adj_avg_acc"] == pytest.approx(hand)  # this copy's metadata.csv counts
    assert abs(out["metadata_adj_avg_acc"] - out["avg_acc"]) > 0.1, out  # the test split is balanced, training is not
    assert out["adj_weights"] == {"landbird/land": 3498, "landbird/water": 184, "waterbird/land": 56,
                                  "waterbird/water": 1057}


# ---------------------------------------------------------------- WILDS' adj_acc_avg

def _wilds_adj_acc_avg(y_pred, y_true, place):
    """WILDS 2.0.0, transcribed: WaterbirdsDataset.eval's `adj_acc_avg` over Accuracy's group-wise
    results (an empty group's accuracy is 0: Metric._compute_group_wise / avg_over_groups)."""
    g = 2 * y_true + place
    acc = [float((y_pred[g == i] == y_true[g == i]).mean()) if (g == i).any() else 0.0 for i in range(4)]
    return (acc[0] * 3498 + acc[1] * 184 + acc[2] * 56 + acc[3] * 1057) / (3498 + 184 + 56 + 1057)


def test_adj_acc_avg_uses_the_release_counts_and_scores_a_missing_group_0_as_wilds(tmp_path):
    from fexbench.data.waterbirds_wilds import (RELEASE_TRAIN_GROUP_COUNTS, adj_acc_avg, group_accuracies,
                                                metadata_adj_avg_acc)
    root = write_waterbirds_fixture(tmp_path / "waterbirds_v1.0", n_per_group=3)
    counts = train_group_counts(root)
    assert tuple(counts) != RELEASE_TRAIN_GROUP_COUNTS                 # a copy with other training counts
    rng = np.random.default_rng(0)
    y_true, place = np.repeat([0, 0, 1, 1], 500), np.tile(np.repeat([0, 1], 500), 2)
    y_pred = np.where(rng.random(2000) < np.repeat([0.95, 0.6, 0.3, 0.9], 500), y_true, 1 - y_true)
    correct, groups = y_pred == y_true, 2 * y_true + place
    wilds = _wilds_adj_acc_avg(y_pred, y_true, place)
    assert adj_acc_avg(correct, groups) == pytest.approx(wilds, abs=1e-12)
    acc, _ = group_accuracies(correct, groups)
    assert metadata_adj_avg_acc(correct, groups, root) == pytest.approx((acc * counts).sum() / counts.sum())
    assert abs(metadata_adj_avg_acc(correct, groups, root) - wilds) > 0.01   # the variant departs

    # a group missing from the test data: WILDS scores it 0 with its weight; the variant drops it
    keep = groups != 1
    wilds_missing = _wilds_adj_acc_avg(y_pred[keep], y_true[keep], place[keep])
    assert adj_acc_avg(correct[keep], groups[keep]) == pytest.approx(wilds_missing, abs=1e-12)
    assert wilds_missing == pytest.approx(sum(acc[g] * RELEASE_TRAIN_GROUP_COUNTS[g] for g in (0, 2, 3)) / 4795)
    present = np.array([1, 0, 1, 1]) * counts
    assert metadata_adj_avg_acc(correct[keep], groups[keep], root) == pytest.approx((acc * present).sum() / present.sum())

    with pytest.raises(ValueError, match="4"):
        adj_acc_avg(correct, groups + 1)
    with pytest.raises(ValueError, match="weights"):
        adj_acc_avg(correct, groups, (1, 2, 3))
