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
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data import DataError, ImageSet

try:  # a progress bar is a nicety, not a dependency
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the project's dependencies
    tqdm = None

SPLITS = {"train": 0, "val": 1, "test": 2}
CLASS_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
REQUIRED_COLUMNS = ("img_filename", "y", "split", "place")
# Allowed codes per column, as documented by WILDS: y 1 = waterbird, place 1 = water.
_CODES = {"y": (0, 1), "split": (0, 1, 2), "place": (0, 1)}
_PROGRESS_MIN = 200


def load_waterbirds(root: str | os.PathLike, split: str, image_size: int = 224,
                    limit: int | None = None) -> ImageSet:
    """Load one split of Waterbirds as an ImageSet with metadata fields "place" and "species".

    Images are converted to RGB and resized to image_size x image_size (bicubic, aspect ratio
    not kept: the release's images have varying sizes).  `limit` keeps that many rows spread
    evenly over the split, not the first rows: metadata.csv is ordered by species, so its head
    is all albatrosses.  Species codes index the species of the whole file, so they agree
    across splits.
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

    images = _decode_all([root / row["img_filename"] for row in chosen],
                         [row["row"] for row in chosen], csv_path, image_size)
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
        },
    )


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


def _decode_all(paths: list[Path], row_numbers: list[int], csv_path: Path,
                image_size: int) -> np.ndarray:
    """Decode images into one preallocated array with a few threads (PIL releases the GIL)."""
    out = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_decode_into, out, i, path, row, csv_path, image_size)
                   for i, (path, row) in enumerate(zip(paths, row_numbers))]
        bar = None
        if tqdm is not None and len(paths) > _PROGRESS_MIN:
            bar = tqdm(total=len(paths), desc="waterbirds", unit="img")
        try:
            for future in as_completed(futures):
                future.result()
                if bar is not None:
                    bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    return out


def _decode_into(out: np.ndarray, i: int, path: Path, row: int, csv_path: Path,
                 image_size: int) -> None:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image {path} not found (listed in {csv_path}, row {row})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"image {path} cannot be decoded (listed in {csv_path}, row {row}): "
                        f"{type(err).__name__}: {err}") from err
