"""Decode many images in parallel, counting the ones that cannot be read instead of dying on the first.

Real releases hold the odd truncated JPEG or a file that went missing in a copy. A loader lists
what it wants decoded (a path or the bytes, plus where the image was listed, for the message);
`decode_images` decodes them with a pool of threads (PIL releases the GIL while it decodes and
resizes) behind a progress bar, reports every bad image by path, and either drops those rows (when
their share is at most `max_bad_fraction`) or raises one DataError naming them. Decoding is lazy in
the sense that matters for a benchmark: loaders parse and check their metadata first, select the
rows they need, and only then decode those rows; the result is cached as an ImageSet by the task.
"""
from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from fexbench.data.imageset import DataError

try:  # a progress bar is a nicety, not a dependency
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is in the project's dependencies
    tqdm = None

log = logging.getLogger("fexbench.images")

PROGRESS_MIN = 200  # no bar for a handful of images
MAX_LISTED = 10  # bad images named in one error message


@dataclass(frozen=True)
class ImageItem:
    """One image to decode: from `path`, or from `data` (encoded bytes) when given; `where` says
    where it was listed (e.g. "listed in metadata.csv, row 5"), for the messages."""

    path: str
    data: bytes | None = None
    where: str = ""


@dataclass(frozen=True)
class BadImage:
    index: int
    path: str
    reason: str  # "not found" or "cannot be decoded: <error>"
    where: str = ""

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"image {self.path} {self.reason}{where}"


@dataclass(frozen=True, eq=False)
class Decoded:
    """images: (n_good, S, S, 3) uint8; keep: the input indices they came from, ascending."""

    images: np.ndarray
    keep: np.ndarray
    bad: tuple[BadImage, ...]
    total: int

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.total if self.total else 0.0


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def decode_images(items: Sequence[ImageItem], image_size: int, max_bad_fraction: float = 0.0,
                  desc: str = "images", workers: int | None = None, progress: bool = True) -> Decoded:
    """Decode to RGB, resize to image_size x image_size (bicubic, aspect ratio not kept).

    A missing or undecodable image is logged by path and counted. If more than
    `max_bad_fraction` of the images are bad, a DataError lists them (the first MAX_LISTED) and
    says how to raise the limit; otherwise the bad rows are dropped and `keep` says which remain.
    """
    if not 0.0 <= max_bad_fraction < 1.0:
        raise ValueError(f"max_bad_fraction must be in [0, 1), got {max_bad_fraction}")
    n = len(items)
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    bad: list[BadImage] = []
    workers = workers or default_workers()
    bar = None
    if progress and tqdm is not None and n > PROGRESS_MIN:
        bar = tqdm(total=n, desc=f"decode {desc}", unit="img", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_decode_into, out, i, item, image_size): i for i, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                reason = future.result()
                if reason is None:
                    ok[i] = True
                else:
                    bad.append(BadImage(i, items[i].path, reason, items[i].where))
                if bar is not None:
                    bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    bad.sort(key=lambda b: b.index)
    if len(bad) > max_bad_fraction * n:
        listed = "; ".join(str(b) for b in bad[:MAX_LISTED])
        more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        if len(bad) == 1 and max_bad_fraction == 0.0:
            raise DataError(listed)
        raise DataError(f"{len(bad)} of {n} {desc} images ({len(bad) / n:.1%}) cannot be read, more than the "
                        f"limit max_bad_image_fraction = {max_bad_fraction:g}: {listed}{more}")
    for b in bad:
        log.warning("skipping %s", b)
    if bad:
        log.warning("%s: skipped %d of %d images (%.2f%%), within max_bad_image_fraction = %g",
                    desc, len(bad), n, 100 * len(bad) / n, max_bad_fraction)
    keep = np.flatnonzero(ok)
    return Decoded(out if len(keep) == n else out[keep], keep, tuple(bad), n)


def _decode_into(out: np.ndarray, i: int, item: ImageItem, image_size: int) -> str | None:
    """Decode item into out[i]; the reason it failed, or None."""
    try:
        source = io.BytesIO(item.data) if item.data is not None else Path(item.path)
        with Image.open(source) as image:
            image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(image, dtype=np.uint8)
        return None
    except FileNotFoundError:
        return "not found"
    except UnidentifiedImageError:
        return "cannot be decoded: not an image format PIL can identify"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"cannot be decoded: {type(err).__name__}: {err}"
