"""Waterbirds as a Hugging Face dataset (written locally by `datasets`), and parallel decoding with
corrupt-image accounting (fexbench.data.images), which the WILDS loader shares."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest

from fexbench.data.imageset import DataError
from fexbench.data.images import ImageItem, decode_images
from fexbench.data.waterbirds_hf import load_waterbirds_hf
from fexbench.data.waterbirds_wilds import load_waterbirds

SIZE = 32
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


def wilds_rows(root: Path) -> list[dict]:
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def to_hf(root: Path, columns=("image", "y", "place")):
    """The WILDS fixture as a DatasetDict (train / validation / test): same JPEG bytes, same codes."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

    image, label, place = columns
    features = Features({image: Image(), label: ClassLabel(names=["landbird", "waterbird"]), place: Value("int64"),
                         "img_filename": Value("string")})
    rows = wilds_rows(root)
    splits = {}
    for name, code in SPLIT_CODES.items():
        chosen = [r for r in rows if int(r["split"]) == code]
        splits[name] = Dataset.from_dict({
            image: [{"bytes": (root / r["img_filename"]).read_bytes(), "path": r["img_filename"]} for r in chosen],
            label: [int(r["y"]) for r in chosen], place: [int(r["place"]) for r in chosen],
            "img_filename": [r["img_filename"] for r in chosen]}, features=features)
    return DatasetDict(splits)


@pytest.fixture
def hf_disk(waterbirds_root, tmp_path) -> Path:
    path = tmp_path / "waterbirds_hf"
    to_hf(waterbirds_root, ("img", "label", "background")).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_saved_dataset_matches_the_wilds_loader(waterbirds_root, hf_disk, split):
    hf = load_waterbirds_hf(hf_disk, split, image_column="img", label_column="label", place_column="background",
                            image_size=SIZE, id_column="img_filename")
    wilds = load_waterbirds(waterbirds_root, split, image_size=SIZE)
    assert hf.name == wilds.name and hf.class_names == ("landbird", "waterbird")
    assert hf.metadata_values["place"] == ("land", "water")
    assert hf.ids == wilds.ids
    default_ids = load_waterbirds_hf(hf_disk, split, image_column="img", label_column="label",
                                     place_column="background", image_size=SIZE).ids
    assert default_ids == tuple(Path(i).name for i in wilds.ids)  # the file names `datasets` recorded
    np.testing.assert_array_equal(hf.labels, wilds.labels)
    np.testing.assert_array_equal(hf.field("place"), wilds.field("place"))
    np.testing.assert_array_equal(hf.images, wilds.images)  # same bytes, same decoding
    assert hf.provenance["source"] == "waterbirds-hf" and hf.provenance["split"] == ("validation" if split == "val" else split)


def test_parquet_layout_as_on_the_hub(waterbirds_root, tmp_path):
    folder = tmp_path / "hub_copy"
    (folder / "data").mkdir(parents=True)
    for name, ds in to_hf(waterbirds_root).items():
        ds.to_parquet(str(folder / "data" / f"{name}-00000-of-00001.parquet"))
    ds = load_waterbirds_hf(folder, "test", image_size=SIZE, limit=3, cache_dir=tmp_path / "hf-cache")
    full = load_waterbirds(waterbirds_root, "test", image_size=SIZE)
    assert len(ds) == 3 and ds.ids[0] == full.ids[0] and ds.ids[-1] == full.ids[-1]  # spread over the split
    np.testing.assert_array_equal(ds.images[0], full.images[0])


def test_missing_column_is_named(hf_disk):
    with pytest.raises(DataError) as err:
        load_waterbirds_hf(hf_disk, "train", image_column="img", label_column="y", place_column="background")
    message = str(err.value)
    assert "missing column" in message and "'y'" in message and "label" in message and str(hf_disk) in message


def test_bad_code_names_row_and_column(waterbirds_root, tmp_path):
    from datasets import DatasetDict

    dd = to_hf(waterbirds_root)
    train = dd["train"].map(lambda row, i: {"place": 7 if i == 2 else row["place"]}, with_indices=True)
    path = tmp_path / "bad"
    DatasetDict({"train": train, "test": dd["test"]}).save_to_disk(str(path))
    with pytest.raises(DataError, match=r"row 2: column 'place' = 7"):
        load_waterbirds_hf(path, "train", image_size=SIZE)


def test_missing_split_and_missing_path_are_named(hf_disk, tmp_path):
    from datasets import load_from_disk

    only = tmp_path / "only_train"
    load_from_disk(str(hf_disk))["train"].save_to_disk(str(only))
    with pytest.raises(DataError, match="single unnamed split"):
        load_waterbirds_hf(only, "train")
    with pytest.raises(DataError, match="does not exist"):
        load_waterbirds_hf(tmp_path / "nope" / "wb", "train")
    with pytest.raises(ValueError, match="split"):
        load_waterbirds_hf(hf_disk, "dev")


def test_corrupt_image_stops_the_run_by_default_and_is_counted_under_a_limit(waterbirds_root, tmp_path, caplog):
    from datasets import DatasetDict

    dd = to_hf(waterbirds_root)
    train = dd["train"].cast_column("image", dd["train"].features["image"].__class__(decode=False))
    broken = train.map(lambda row, i: {"image": {"bytes": b"not a jpeg" if i == 1 else row["image"]["bytes"],
                                                 "path": row["image"]["path"]}}, with_indices=True)
    path = tmp_path / "corrupt"
    DatasetDict({"train": broken}).save_to_disk(str(path))
    victim = Path(train[1]["image"]["path"]).name  # `datasets` records the file name
    with pytest.raises(DataError, match="cannot be decoded") as err:
        load_waterbirds_hf(path, "train", image_size=SIZE)
    assert victim in str(err.value) and "row 1" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="fexbench.images"):
        ds = load_waterbirds_hf(path, "train", image_size=SIZE, max_bad_fraction=0.2)
    assert len(ds) == len(train) - 1 and victim not in ds.ids and ds.provenance["bad_images"] == "1"
    assert victim in caplog.text


def test_wilds_loader_goes_on_under_the_limit(waterbirds_root):
    rows = [r for r in wilds_rows(waterbirds_root) if r["split"] == "0"]
    (waterbirds_root / rows[0]["img_filename"]).write_bytes(b"truncated")
    (waterbirds_root / rows[3]["img_filename"]).unlink()
    with pytest.raises(DataError) as err:
        load_waterbirds(waterbirds_root, "train", image_size=SIZE, max_bad_fraction=0.1)
    message = str(err.value)
    assert "2 of 8" in message and "max_bad_image_fraction = 0.1" in message
    assert rows[0]["img_filename"] in message and rows[3]["img_filename"] in message and "not found" in message
    ds = load_waterbirds(waterbirds_root, "train", image_size=SIZE, max_bad_fraction=0.3)
    assert len(ds) == 6 and ds.provenance["bad_images"] == "2"
    assert set(ds.ids) == {r["img_filename"] for r in rows} - {rows[0]["img_filename"], rows[3]["img_filename"]}
    # rows stay aligned with their images after dropping: backgrounds are bluish exactly on water
    corner = ds.images[:, :4, :4].astype(float).mean(axis=(1, 2))
    np.testing.assert_array_equal(corner[:, 2] > corner[:, 1], ds.field("place") == 1)


def test_decode_images_keeps_order_and_lists_at_most_ten(tmp_path):
    from PIL import Image

    items = []
    for i in range(30):
        path = tmp_path / f"{i}.png"
        if i % 2:
            Image.fromarray(np.full((5, 7, 3), i, np.uint8)).save(path)
        items.append(ImageItem(str(path), where=f"item {i}"))
    with pytest.raises(DataError, match="and 5 more") as err:
        decode_images(items, 4, workers=3, progress=False)
    assert "15 of 30" in str(err.value) and "item 0" in str(err.value)
    ok = decode_images(items, 4, max_bad_fraction=0.5, workers=3, progress=False)
    assert ok.keep.tolist() == list(range(1, 30, 2)) and ok.images[:, 0, 0, 0].tolist() == list(range(1, 30, 2))
    with pytest.raises(ValueError):
        decode_images(items, 4, max_bad_fraction=1.0)
