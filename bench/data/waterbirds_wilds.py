"""Loader for the real Waterbirds release in the WILDS layout (`waterbirds_v1.0`).

The release is a folder holding `metadata.csv` (img_id, img_filename, y, split, place,
place_filename) and one JPEG per row at `<root>/<img_filename>`.  We read it with the stdlib
so the benchmark does not depend on the `wilds` package, and check every value on the way in:
a wrong code in metadata.csv would silently move images between groups, and worst-group
accuracy is computed on exactly those groups.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path, PurePosixPath

import numpy as np

from fexbench.data.imageset import DataError, ImageSet
from fexbench.data.images import ImageItem, decode_images

SPLITS = {"train": 0, "val": 1, "test": 2}
CLASS_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
REQUIRED_COLUMNS = ("img_filename", "y", "split", "place")
# Allowed codes per column, as documented by WILDS: y 1 = waterbird, place 1 = water.
_CODES = {"y": (0, 1), "split": (0, 1, 2), "place": (0, 1)}


def load_waterbirds(root: str | os.PathLike, split: str, image_size: int = 224,
                    limit: int | None = None, max_bad_fraction: float = 0.0,
                    workers: int | None = None) -> ImageSet:
    """Load one split of Waterbirds as an ImageSet with metadata fields "place" and "species".

    Images are converted to RGB and resized to image_size x image_size (bicubic, aspect ratio
    not kept: the release's images have varying sizes).  `limit` keeps that many rows spread
    evenly over the split, not the first rows: metadata.csv is ordered by species, so its head
    is all albatrosses.  Species codes index the species of the whole file, so they agree
    across splits.  Images are decoded in parallel (fexbench.data.images); up to `max_bad_fraction` of
    them may be missing or corrupt: those rows are dropped and reported, beyond it a DataError
    names them.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Waterbirds root {root} does not exist or is not a folder "
                        "(expected the WILDS `waterbirds_v1.0` folder holding metadata.csv)")
    csv_path = root / "metadata.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found: is {root} the Waterbirds release folder?")
    raw = csv_path.read_bytes()
    rows = _parse_metadata(raw, csv_path)

    species_names = tuple(sorted({row["species"] for row in rows}))
    chosen = [row for row in rows if row["split"] == SPLITS[split]]
    if not chosen:
        raise DataError(f"{csv_path}: no rows with split={SPLITS[split]} ({split})")
    if limit is not None and limit < len(chosen):
        keep = np.linspace(0, len(chosen) - 1, limit).round().astype(int)
        chosen = [chosen[i] for i in keep]

    items = [ImageItem(str(root / row["img_filename"]), where=f"listed in {csv_path}, row {row['row']}")
             for row in chosen]
    decoded = decode_images(items, image_size, max_bad_fraction, f"waterbirds-{split}", workers)
    images, chosen = decoded.images, [chosen[i] for i in decoded.keep]
    species_code = {name: code for code, name in enumerate(species_names)}
    return ImageSet(
        name=f"waterbirds-{split}",
        images=images,
        labels=np.array([row["y"] for row in chosen], dtype=np.int64),
        class_names=CLASS_NAMES,
        metadata={
            "place": np.array([row["place"] for row in chosen], dtype=np.int64),
            "species": np.array([species_code[row["species"]] for row in chosen], dtype=np.int64),
        },
        metadata_values={"place": PLACE_NAMES, "species": species_names},
        ids=tuple(row["img_filename"] for row in chosen),
        captions=None,
        provenance={
            "source": "waterbirds-wilds",
            "root": str(root),
            "metadata_sha256": hashlib.sha256(raw).hexdigest(),
            "split": split,
            "image_size": str(image_size),
            "limit": str(limit),
            "bad_images": str(len(decoded.bad)),
        },
    )


# WILDS 2.0.0 (wilds/datasets/waterbirds_dataset.py, WaterbirdsDataset.eval): `adj_acc_avg` weights
# the four group accuracies by these fixed numbers, the release's training-group counts, whatever
# data it is given (groups 2 * y + place: landbird/land, landbird/water, waterbird/land, waterbird/water).
RELEASE_TRAIN_GROUP_COUNTS = (3498, 184, 56, 1057)


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, count) of each of the 4 groups; an empty group's accuracy is 0, as WILDS'
    `Metric._compute_group_wise` / `avg_over_groups` make it."""
    correct, groups = np.asarray(correct, dtype=np.float64), np.asarray(groups)
    if correct.shape != groups.shape:
        raise ValueError(f"correct and groups must have the same shape, not {correct.shape} and {groups.shape}")
    bad = sorted(set(np.unique(groups).tolist()) - {0, 1, 2, 3})
    if bad:
        raise ValueError(f"groups must be 2 * y + place in 0..3, not {bad[0]!r}")
    counts = np.bincount(groups.astype(np.int64), minlength=4)
    sums = np.bincount(groups.astype(np.int64), weights=correct, minlength=4)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), counts


def adj_acc_avg(correct: np.ndarray, groups: np.ndarray,
                weights: tuple[int, ...] | np.ndarray = RELEASE_TRAIN_GROUP_COUNTS) -> float:
    """WILDS' `adj_acc_avg`: group accuracies weighted by `weights` (default the release's fixed
    training counts, as WILDS does). A group missing from `groups` scores 0 with its full weight,
    as in WILDS; pass `weights` with a 0 there to leave it out instead."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (4,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be 4 non-negative numbers, not all 0, not {weights.tolist()!r}")
    acc, _ = group_accuracies(correct, groups)
    return float((acc * weights).sum() / weights.sum())


def metadata_adj_avg_acc(correct: np.ndarray, groups: np.ndarray, root: str | os.PathLike) -> float:
    """fexbench's variant of `adj_acc_avg` (its `adj_avg_acc` before the WILDS weights were
    adopted): weighted by the train split of this copy's metadata.csv (`train_group_counts`), over
    the groups present in `groups` only (a missing group is dropped, not scored 0)."""
    counts = train_group_counts(root).astype(np.float64)
    acc, present = group_accuracies(correct, groups)
    counts = np.where(present > 0, counts, 0.0)
    if counts.sum() <= 0:
        raise DataError(f"{Path(root) / 'metadata.csv'}: no training rows in the groups of the test data")
    return float((acc * counts).sum() / counts.sum())


def train_group_counts(root: str | os.PathLike) -> np.ndarray:
    """Rows of the train split (split 0) of metadata.csv per group 2 * y + place.

    On the release these equal RELEASE_TRAIN_GROUP_COUNTS (landbird/land 3498, landbird/water 184,
    waterbird/land 56, waterbird/water 1057), the fixed weights of WILDS' `adj_acc_avg`; on other
    copies they differ, and `metadata_adj_avg_acc` weights by them.
    """
    csv_path = Path(root) / "metadata.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} not found: is {root} the Waterbirds release folder?")
    rows = [row for row in _parse_metadata(csv_path.read_bytes(), csv_path) if row["split"] == SPLITS["train"]]
    if not rows:
        raise DataError(f"{csv_path}: no rows with split=0 (train): no training group counts to weight by")
    return np.bincount([2 * row["y"] + row["place"] for row in rows], minlength=4).astype(np.int64)


def _parse_metadata(raw: bytes, csv_path: Path) -> list[dict]:
    """Rows of metadata.csv with integer codes checked; each row remembers its row number."""
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM left by spreadsheet tools
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path} is not UTF-8 text: {err}") from err
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; columns found: {columns}")
    reader.fieldnames = columns

    rows = []
    for number, record in enumerate(reader, start=1):
        where = f"{csv_path}: row {number} (line {reader.line_num})"
        row = {"row": number}
        for key, allowed in _CODES.items():
            value = (record.get(key) or "").strip()
            try:
                code = int(value)
            except ValueError:
                raise DataError(f"{where}: field {key!r} = {value!r} is not an integer") from None
            if code not in allowed:
                raise DataError(f"{where}: field {key!r} = {code} is out of range "
                                f"(allowed: {', '.join(map(str, allowed))})")
            row[key] = code
        filename = (record.get("img_filename") or "").strip()
        parts = PurePosixPath(filename).parts
        if len(parts) < 2 or PurePosixPath(filename).is_absolute() or ".." in parts:
            raise DataError(f"{where}: field 'img_filename' = {filename!r} is not a relative "
                            "path of the form <species folder>/<image file>")
        row["img_filename"] = filename
        row["species"] = parts[0]
        rows.append(row)
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows")
    return rows
