"""Loader for Waterbirds published as a Hugging Face dataset (a hub name or a local copy).

Copies of Waterbirds circulate as Hugging Face datasets with their own column names; the config
names the image, label and place columns. Whatever the copy, the result is the same ImageSet as
bench/waterbirds_wilds.py gives: class_names ("landbird", "waterbird"), metadata field "place"
("land", "water"), so tasks cannot tell the sources apart. Labels and places are checked row by
row (a wrong code silently moves images between groups, and worst-group accuracy is computed on
exactly those groups). Images are read undecoded from the dataset (`Image(decode=False)`) and
decoded in parallel by fexbench.data.images, so a corrupt image is reported by path and counted.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fexbench.core.references import looks_local
from fexbench.data.imageset import DataError, ImageSet
from fexbench.data.images import ImageItem, decode_images

CLASS_NAMES = ("landbird", "waterbird")
PLACE_NAMES = ("land", "water")
# Split names seen in the wild, by the name fexbench uses (WILDS: train, val, test).
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


def load_waterbirds_hf(path_or_name: str | os.PathLike, split: str, image_column: str = "image",
                       label_column: str = "y", place_column: str = "place", image_size: int = 224,
                       limit: int | None = None, id_column: str | None = None, max_bad_fraction: float = 0.0,
                       cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                       progress: bool = True) -> ImageSet:
    """One split of a Waterbirds Hugging Face dataset as an ImageSet.

    `path_or_name` is a folder written by `save_to_disk`, a folder `load_dataset` reads (parquet
    shards, an imagefolder with metadata), or a hub dataset name. `split` is train, val or test
    (val also finds a split called validation). Labels must be 0 landbird / 1 waterbird and places
    0 land / 1 water (ints, bools or a ClassLabel with those codes). `limit` keeps that many rows
    spread evenly over the split. Ids are the `id_column` values, else the image file names the
    dataset recorded, else "<split>/<row>". `cache_dir` is where `load_dataset` keeps its arrow
    cache (default: Hugging Face's).
    """
    if split not in SPLIT_ALIASES:
        raise ValueError(f"split must be one of {sorted(SPLIT_ALIASES)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    source = str(path_or_name)
    splits = _open(source, cache_dir)
    name = next((s for s in SPLIT_ALIASES[split] if s in splits), None)
    if name is None:
        raise DataError(f"{source}: no split {split!r} (looked for {list(SPLIT_ALIASES[split])}); "
                        f"splits are {sorted(splits)}")
    ds = splits[name]
    where = f"{source} [{name}]"
    columns = list(ds.column_names)
    wanted = [c for c in (image_column, label_column, place_column, id_column) if c is not None]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; columns found: {columns} "
                        "(name the columns in the config: image_column, label_column, place_column)")
    if len(ds) == 0:
        raise DataError(f"{where}: the split has no rows")

    rows = np.arange(len(ds))
    if limit is not None and limit < len(ds):
        rows = np.linspace(0, len(ds) - 1, limit).round().astype(int)
        ds = ds.select(rows.tolist())
    labels = _codes(ds[label_column], where, label_column, rows)
    places = _codes(ds[place_column], where, place_column, rows)
    raw = _raw_images(ds, image_column)
    ids = _ids(ds, raw, id_column, name, rows)
    items = _image_items(raw, image_column, where, rows)

    decoded = decode_images(items, image_size, max_bad_fraction, f"waterbirds-{split}", workers, progress)
    keep = decoded.keep
    fingerprint = getattr(ds, "_fingerprint", "") or ""
    return ImageSet(
        name=f"waterbirds-{split}",
        images=decoded.images,
        labels=labels[keep],
        class_names=CLASS_NAMES,
        metadata={"place": places[keep]},
        metadata_values={"place": PLACE_NAMES},
        ids=tuple(ids[i] for i in keep),
        provenance={
            "source": "waterbirds-hf",
            "path": source,
            "split": name,
            "dataset_fingerprint": str(fingerprint),
            "columns": f"image={image_column},label={label_column},place={place_column}",
            "image_size": str(image_size),
            "limit": str(limit),
            "bad_images": str(len(decoded.bad)),
        },
    )


def _open(source: str, cache_dir: str | os.PathLike | None) -> dict:
    """split name -> datasets.Dataset; a folder written by save_to_disk is read with load_from_disk."""
    import datasets  # imported here: it is slow to import and only real runs need it

    path = Path(source).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        elif path.exists() or looks_local(source):
            if not path.exists():
                raise DataError(f"Waterbirds dataset {source} does not exist ({path.absolute()})")
            loaded = datasets.load_dataset(str(path), cache_dir=None if cache_dir is None else str(cache_dir))
        else:
            loaded = datasets.load_dataset(source, cache_dir=None if cache_dir is None else str(cache_dir))
    except DataError:
        raise
    except Exception as err:  # the library's errors vary by version; name the source either way
        raise DataError(f"cannot open Hugging Face dataset {source!r}: {type(err).__name__}: {err}") from err
    if isinstance(loaded, datasets.Dataset):
        raise DataError(f"{source} holds a single unnamed split; save a DatasetDict with splits "
                        "train, validation and test (DatasetDict({...}).save_to_disk(...))")
    return dict(loaded)


def _codes(values, where: str, column: str, rows: np.ndarray) -> np.ndarray:
    """0/1 codes of a label or place column, checked."""
    out = np.empty(len(rows), dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if not isinstance(value, (int, np.integer)) or value not in (0, 1):
            raise DataError(f"{where}: row {int(rows[i])}: column {column!r} = {value!r}; expected 0 or 1 "
                            f"({'0 landbird, 1 waterbird' if column != 'place' else '0 land, 1 water'})")
        out[i] = int(value)
    return out


def _ids(ds, raw: list, id_column: str | None, split: str, rows: np.ndarray) -> list[str]:
    if id_column is not None:
        return [str(v) for v in ds[id_column]]
    paths = [_path_of(v) for v in raw]
    if all(paths) and len(set(paths)) == len(paths):
        return paths
    return [f"{split}/{int(r)}" for r in rows]


def _raw_images(ds, image_column: str) -> list:
    """The image column without decoding: dicts {"bytes", "path"} for an Image feature, else the raw values."""
    import datasets

    feature = ds.features[image_column]
    if isinstance(feature, datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))
    return list(ds[image_column])


def _path_of(value) -> str:
    if isinstance(value, dict):
        return str(value.get("path") or "")
    return value if isinstance(value, str) else ""


def _image_items(raw: list, image_column: str, where: str, rows: np.ndarray) -> list[ImageItem]:
    items = []
    for i, value in enumerate(raw):
        label = f"row {int(rows[i])} of {where}"
        if isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
            path = value.get("path") or f"<bytes of {label}>"
            items.append(ImageItem(str(path), value.get("bytes"), label))
        elif isinstance(value, str) and value:
            items.append(ImageItem(value, None, label))
        else:
            raise DataError(f"{where}: row {int(rows[i])}: column {image_column!r} holds "
                            f"{type(value).__name__}, not an image (an Image feature or a file path)")
    return items
