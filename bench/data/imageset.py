"""Image sets: the one data structure every dataset (synthetic or real) is turned into.

WILDS-style: a split carries its images, labels and named metadata fields, so tasks can form
groups (label x background) and evaluate per group without knowing where the data came from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from fexbench.core import profile
from fexbench.core.cache import atomic_write, build_once, stable_hash


class DataError(ValueError):
    """Bad input data: the message names the file, field or value at fault."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """A split of RGB images with integer labels and categorical metadata fields.

    images: (N, H, W, 3) uint8.  labels: (N,) int64 indexes into class_names.
    metadata: field name -> (N,) int64 codes; metadata_values[field][code] is the code's name.
    ids: one stable identifier per image (a file name or a scene id).
    captions: optional one caption per image.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    metadata: Mapping[str, np.ndarray]
    metadata_values: Mapping[str, tuple[str, ...]]
    ids: tuple[str, ...]
    captions: tuple[str, ...] | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise DataError(f"{self.name}: images must be (N, H, W, 3) uint8, got "
                            f"{self.images.shape} {self.images.dtype}")
        if len(self.images) != n or len(self.ids) != n:
            raise DataError(f"{self.name}: {len(self.images)} images, {n} labels, {len(self.ids)} ids")
        for key, values in self.metadata.items():
            if len(values) != n:
                raise DataError(f"{self.name}: metadata field {key!r} has {len(values)} rows, expected {n}")
            if key not in self.metadata_values:
                raise DataError(f"{self.name}: metadata field {key!r} has no value names")
        if self.captions is not None and len(self.captions) != n:
            raise DataError(f"{self.name}: {len(self.captions)} captions for {n} images")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"{self.name}: labels outside 0..{len(self.class_names) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Sequence[int] | np.ndarray, name: str | None = None) -> "ImageSet":
        index = np.asarray(index)
        return ImageSet(
            name=name or self.name,
            images=self.images[index],
            labels=self.labels[index],
            class_names=self.class_names,
            metadata={k: v[index] for k, v in self.metadata.items()},
            metadata_values=self.metadata_values,
            ids=tuple(self.ids[i] for i in np.arange(len(self))[index]),
            captions=None if self.captions is None else tuple(self.captions[i] for i in np.arange(len(self))[index]),
            provenance=self.provenance,
        )

    def field(self, name: str) -> np.ndarray:
        """A metadata field by name; 'y' is the label (as in WILDS)."""
        if name == "y":
            return self.labels
        if name not in self.metadata:
            raise DataError(f"{self.name}: no metadata field {name!r}; fields are {sorted(self.metadata)}")
        return self.metadata[name]

    def groups(self, fields: Sequence[str] = ("y", "place")) -> np.ndarray:
        """Group id per image from a combination of fields (WILDS: y x place -> 4 groups).

        Group id = sum_i code_i * prod_{j>i} n_values_j, so (y, place) gives 2*y + place.
        """
        gid = np.zeros(len(self), dtype=np.int64)
        for name in fields:
            n_values = len(self.class_names) if name == "y" else len(self.metadata_values[name])
            gid = gid * n_values + self.field(name)
        return gid

    @cached_property
    def content_hash(self) -> str:
        """sha256 over pixels, labels, metadata and captions: caches key on content, not names."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        for key in sorted(self.metadata):
            h.update(key.encode())
            h.update(np.ascontiguousarray(self.metadata[key], dtype=np.int64).tobytes())
        h.update("\x00".join(self.class_names).encode())
        if self.captions is not None:
            h.update("\x00".join(self.captions).encode())
        return h.hexdigest()


def save_imageset(path: str | Path, data: ImageSet) -> Path:
    """One safetensors file: arrays as tensors, names/ids/captions as JSON in its string metadata."""
    arrays = {"images": np.ascontiguousarray(data.images), "labels": np.asarray(data.labels, np.int64)}
    arrays.update({f"metadata.{k}": np.asarray(v, np.int64) for k, v in data.metadata.items()})
    header = {"name": data.name, "class_names": list(data.class_names),
              "metadata_values": {k: list(v) for k, v in data.metadata_values.items()},
              "ids": list(data.ids), "captions": None if data.captions is None else list(data.captions),
              "provenance": dict(data.provenance)}
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata={"imageset": json.dumps(header)}))


def load_imageset(path: str | Path) -> ImageSet:
    with safe_open(str(path), framework="numpy") as f:
        header = json.loads(f.metadata()["imageset"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return ImageSet(
        name=header["name"], images=arrays["images"], labels=arrays["labels"],
        class_names=tuple(header["class_names"]),
        metadata={k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("metadata.")},
        metadata_values={k: tuple(v) for k, v in header["metadata_values"].items()},
        ids=tuple(header["ids"]), captions=None if header["captions"] is None else tuple(header["captions"]),
        provenance=header["provenance"])


def cached_imageset(cache_dir: str | Path, key: Mapping[str, object], build: Callable[[], ImageSet]) -> ImageSet:
    """Build an image set once per generator key (e.g. the world's layout, size and seed); read
    back only when the file matches the digest recorded when it was written (fexbench.core.cache)."""
    path = Path(cache_dir) / "worlds" / f"{stable_hash(dict(key), 32)}.safetensors"

    def make() -> ImageSet:
        data = build()
        save_imageset(path, data)
        return data

    with profile.stage("data"):
        return build_once(path, lambda: load_imageset(path), make)
