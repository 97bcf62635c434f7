"""The real backgrounds challenge (ImageNet-9, Xiao et al. 2020) on disk, and its accuracy protocol.

Layouts read (MadryLab/backgrounds_challenge):
  test variants  <root>/<variant>/val/<class folder>/*.JPEG
  IN-9L training <root>/train/<class folder>/*  and  <root>/val/<class folder>/*
Class folders are `00_dog ... 08_fish` (two contain a space); the class index is the folder's
position in CLASS_FOLDERS, which is also its two-digit prefix. A 1000-class ImageNet model is
scored the challenge's way: argmax over all 1000 logits, then `in_to_in9.json` maps the winner
to 0..8 or to -1, and -1 never equals a label, so an unmapped argmax counts as wrong.

`challenge_accuracies` is the protocol itself (accuracy per variant, per class, BG-gap); the
synthetic task measures its subjects with the same function.

Preprocessing. The reference evaluation (in9_eval.py, tools/datasets.py) feeds each image
unresized (`transforms.ToTensor()`, the release's images are all 224 x 224) and normalises it with
the mean/std of the model's training set: ImageNet's for an ImageNet model, IN-9's for a model
trained on IN-9L. `challenge_preprocess` is that protocol and `load_challenge_variant(resize=False)`
keeps the pixels as stored; a subject's own processor (resize, centre-crop) is the other choice.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from PIL import Image

from fexbench.data.imageset import DataError, ImageSet
from fexbench.data.images import ImageItem, decode_images
from fexbench.data.world import VARIANTS  # the challenge's eight test variants, mirrored by the world

CLASS_FOLDERS = ("00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
                 "06_musical instrument", "07_primate", "08_fish")
CLASS_NAMES = tuple(folder.split("_", 1)[1] for folder in CLASS_FOLDERS)
IN9L_SPLITS = ("train", "val")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
N_IMAGENET_CLASSES = 1000
# Normalisation of the reference evaluation (tools/datasets.py): ImageNet's, and IN-9's for IN-9L models.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IN9_MEAN, IN9_STD = (0.4717, 0.4499, 0.3837), (0.2600, 0.2516, 0.2575)
# data.preprocess on the real challenge: the reference's protocol, or each subject's own processor.
PREPROCESS_CHOICES = ("challenge", "model")
MAX_LISTED = 5


# ---------------------------------------------------------------- loaders

def load_challenge_variant(root: str | os.PathLike, variant: str, image_size: int = 224,
                           limit: int | None = None, max_bad_fraction: float = 0.0,
                           workers: int | None = None, resize: bool = True) -> ImageSet:
    """One test variant, `<root>/<variant>/val/<class folder>/*.JPEG`, as a 9-class ImageSet.

    ids are `<variant>/val/<class folder>/<file>`: mixed_rand and mixed_next reuse the original
    file names, so the variant prefix keeps ids unique across variants while the file name still
    pairs an image with its original. With resize=False (the challenge's protocol) every image
    must already be image_size x image_size, and its pixels are kept exactly as decoded.
    """
    if variant not in VARIANTS:
        raise DataError(f"unknown backgrounds-challenge variant {variant!r}; variants are {', '.join(VARIANTS)}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"backgrounds-challenge root {root} does not exist or is not a folder "
                        "(expected the unpacked bg_challenge folder holding original/, mixed_rand/, ...)")
    folder = root / variant / "val"
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"variant folder {folder} not found; folders under {root}: {present}")
    return _load_class_tree(folder, root, f"in9-{variant}", image_size, limit, max_bad_fraction, workers,
                            {"source": "backgrounds-challenge", "variant": variant}, resize)


def load_in9l(root: str | os.PathLike, split: str, image_size: int = 224, limit: int | None = None,
              max_bad_fraction: float = 0.0, workers: int | None = None) -> ImageSet:
    """One split of IN-9L, the challenge's training set: `<root>/<split>/<class folder>/*`."""
    if split not in IN9L_SPLITS:
        raise DataError(f"IN-9L split must be one of {IN9L_SPLITS}, got {split!r}")
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"IN-9L split folder {folder} not found (expected {root}/train and {root}/val)")
    return _load_class_tree(folder, root, f"in9l-{split}", image_size, limit, max_bad_fraction, workers,
                            {"source": "in9l", "split": split})


def _load_class_tree(folder: Path, root: Path, name: str, image_size: int, limit: int | None,
                     max_bad_fraction: float, workers: int | None, provenance: dict[str, str],
                     resize: bool = True) -> ImageSet:
    """Images of `folder/<class folder>/*`, labelled by their class folder, in sorted order."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of images, got {limit}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p for p in present if p not in CLASS_FOLDERS]
    if unknown:
        raise DataError(f"{folder}: unknown class folder(s) {unknown}; the class folders are "
                        f"{', '.join(repr(c) for c in CLASS_FOLDERS)}")
    missing = [c for c in CLASS_FOLDERS if c not in present]
    if missing:
        raise DataError(f"{folder}: missing class folder(s) {missing}")
    files, labels = [], []
    for label, cls in enumerate(CLASS_FOLDERS):
        found = _image_files(folder / cls)
        if not found:
            raise DataError(f"{folder / cls}: no images (*.JPEG, *.jpg, *.png)")
        files += found
        labels += [label] * len(found)
    if limit is not None and limit < len(files):  # spread over the classes, not the first class only
        keep = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    if not resize:
        _check_sizes(files, image_size)
    manifest = hashlib.sha256()
    for path in files:  # relative path and size: catches a missing or truncated file without re-reading
        manifest.update(f"{path.relative_to(root).as_posix()}\x00{path.stat().st_size}\n".encode())
    decoded = decode_images([ImageItem(str(p), where=f"class folder {p.parent.name!r}") for p in files],
                            image_size, max_bad_fraction, name, workers)
    kept = [files[i] for i in decoded.keep]
    return ImageSet(
        name=name, images=decoded.images, labels=np.asarray([labels[i] for i in decoded.keep], dtype=np.int64),
        class_names=CLASS_NAMES, metadata={}, metadata_values={},
        ids=tuple(p.relative_to(root).as_posix() for p in kept), captions=None,
        provenance={**provenance, "root": str(root), "image_size": str(image_size), "limit": str(limit),
                    "resized": "yes" if resize else "no (kept as stored)",
                    "file_manifest_sha256": manifest.hexdigest(), "bad_images": str(len(decoded.bad))})


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_sizes(files: Sequence[Path], image_size: int) -> None:
    """Every readable image is image_size x image_size (read from headers; unreadable files are
    left to the decoder, which counts them against max_bad_fraction)."""
    wrong = []
    for path in files:
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, SyntaxError, ValueError):
            continue
        if size != (image_size, image_size):
            wrong.append(f"{path} is {size[0]}x{size[1]}")
    if wrong:
        more = f"; and {len(wrong) - MAX_LISTED} more" if len(wrong) > MAX_LISTED else ""
        raise DataError(f"the challenge's protocol (data.preprocess = 'challenge') evaluates images unresized, "
                        f"so every image must be {image_size}x{image_size} (data.image_size): "
                        f"{'; '.join(wrong[:MAX_LISTED])}{more}. Set data.image_size to the images' size, "
                        "or data.preprocess = 'model' to resize them for each subject's own processor")


def check_challenge_layout(root: str | os.PathLike, variants: Sequence[str] = VARIANTS,
                           image_size: int | None = None) -> None:
    """The release's whole layout, before anything is decoded or run: every variant folder, its nine
    class folders, at least one image in each (and, given image_size, every image that size).
    One DataError lists every problem found."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"backgrounds-challenge root {root} does not exist or is not a folder "
                        "(expected the unpacked bg_challenge folder holding original/, mixed_rand/, ...)")
    problems, files = [], []
    for variant in dict.fromkeys(variants):
        if variant not in VARIANTS:
            problems.append(f"unknown variant {variant!r} (variants are {', '.join(VARIANTS)})")
            continue
        folder = root / variant / "val"
        if not folder.is_dir():
            problems.append(f"variant folder {folder} not found")
            continue
        present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [p for p in present if p not in CLASS_FOLDERS]
        if unknown:
            problems.append(f"{folder}: unknown class folder(s) {unknown}")
        for cls in CLASS_FOLDERS:
            if cls not in present:
                problems.append(f"{folder}: missing class folder {cls!r}")
                continue
            found = _image_files(folder / cls)
            if not found:
                problems.append(f"{folder / cls}: no images (*.JPEG, *.jpg, *.png)")
            files += found
    if problems:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"backgrounds-challenge layout under {root} is incomplete ({len(problems)} problem(s)): "
                        + "; ".join(problems) + f". Folders under {root}: {present}; the class folders are "
                        + ", ".join(repr(c) for c in CLASS_FOLDERS))
    if image_size is not None:
        _check_sizes(files, image_size)


# ---------------------------------------------------------------- 1000 -> 9 classes

def load_in_to_in9(path: str | os.PathLike) -> np.ndarray:
    """The challenge's in_to_in9.json: {"0": c, ..., "999": c} with c in -1..8 -> (1000,) int64."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"class mapping {path} not found (copy in_to_in9.json from the challenge's repository)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object mapping \"0\"..\"999\" to -1..8, got {type(raw).__name__}")
    expected = {str(i) for i in range(N_IMAGENET_CLASSES)}
    extra, missing = sorted(set(raw) - expected), sorted(expected - set(raw), key=int)
    if extra or missing:
        raise DataError(f"{path}: keys must be \"0\"..\"999\"; unexpected {extra[:5]}, missing {missing[:5]}")
    mapping = np.empty(N_IMAGENET_CLASSES, dtype=np.int64)
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < len(CLASS_FOLDERS):
            raise DataError(f"{path}: key {key!r} maps to {value!r}; values must be integers -1..8")
        mapping[int(key)] = value
    return mapping


def map_in1000_to_in9(logits_or_pred: np.ndarray, mapping: np.ndarray | Sequence[int]) -> np.ndarray:
    """IN-9 predictions of a 1000-class model: argmax over all 1000 logits (if given logits), then map.

    Unmapped classes give -1, which matches no label: the challenge counts them as wrong. Do not
    restrict the argmax to the 370 mapped classes; that is not the challenge's protocol.
    """
    mapping = np.asarray(mapping, dtype=np.int64)
    if mapping.shape != (N_IMAGENET_CLASSES,):
        raise DataError(f"the class mapping must have {N_IMAGENET_CLASSES} entries, got shape {mapping.shape}")
    x = np.asarray(logits_or_pred)
    if x.ndim == 2:
        if x.shape[1] != N_IMAGENET_CLASSES:
            raise DataError(f"logits must be (N, {N_IMAGENET_CLASSES}), got {x.shape}")
        pred = x.argmax(axis=1)
    elif x.ndim == 1:
        if not np.issubdtype(x.dtype, np.integer):
            raise DataError(f"1-D input must be integer class indices, got dtype {x.dtype}")
        pred = x.astype(np.int64)
        if len(pred) and (pred.min() < 0 or pred.max() >= N_IMAGENET_CLASSES):
            raise DataError(f"class indices must be in 0..{N_IMAGENET_CLASSES - 1}, got {pred.min()}..{pred.max()}")
    else:
        raise DataError(f"expected (N, 1000) logits or (N,) class indices, got shape {x.shape}")
    return mapping[pred]


# ---------------------------------------------------------------- the protocol

def challenge_accuracies(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                         n_classes: int = len(CLASS_FOLDERS)) -> dict:
    """Accuracy per variant (overall and per class) and BG-gap = acc(mixed_same) - acc(mixed_rand).

    predictions / labels: variant -> (N,) int arrays (a prediction of -1 is wrong). Per-class
    accuracy is the recall of that class (share of its images predicted as it); NaN for a class
    with no image. The per-class BG-gap uses the per-class accuracies.
    """
    acc, per_class = {}, {}
    for variant, pred in predictions.items():
        if variant not in labels:
            raise DataError(f"predictions for variant {variant!r} but no labels")
        pred, y = np.asarray(pred), np.asarray(labels[variant])
        if pred.shape != y.shape:
            raise DataError(f"variant {variant!r}: {pred.shape} predictions for {y.shape} labels")
        correct = pred == y
        acc[variant] = float(correct.mean()) if len(y) else float("nan")
        per_class[variant] = [float(correct[y == c].mean()) if (y == c).any() else float("nan")
                              for c in range(n_classes)]
    out = {"accuracy": acc, "per_class_accuracy": per_class}
    if "mixed_same" in acc and "mixed_rand" in acc:
        out["bg_gap"] = acc["mixed_same"] - acc["mixed_rand"]
        out["per_class_bg_gap"] = [s - r for s, r in zip(per_class["mixed_same"], per_class["mixed_rand"])]
    return out


# ---------------------------------------------------------------- ImageNet classifiers as IN-9 subjects

class In9Logits(nn.Module):
    """1000 ImageNet logits -> 10: for each IN-9 class the max over the ImageNet classes mapped to it,
    and a tenth column, the max over the unmapped classes.

    The argmax of these 10 is the IN-9 class of the 1000-way argmax, or 9 ("unmapped", wrong)
    exactly when the challenge's protocol maps the argmax to -1, so accuracies match the challenge;
    and a class target's margin (its column minus the best other) is the margin of its best
    ImageNet class over every class outside it, which is what an explainer of the class should see.
    """

    def __init__(self, inner: nn.Module, mapping: np.ndarray | Sequence[int]):
        super().__init__()
        mapping = np.asarray(mapping, dtype=np.int64)
        if mapping.shape != (N_IMAGENET_CLASSES,):
            raise DataError(f"the class mapping must have {N_IMAGENET_CLASSES} entries, got shape {mapping.shape}")
        self.inner = inner
        self.register_buffer("groups", torch.as_tensor(np.where(mapping < 0, len(CLASS_FOLDERS), mapping)),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        logits = getattr(out, "logits", out)
        if logits.shape[-1] != N_IMAGENET_CLASSES:
            raise DataError(f"expected {N_IMAGENET_CLASSES} ImageNet logits, the model gives {logits.shape[-1]}")
        empty = torch.full_like(logits[:, 0], float("-inf"))
        return torch.stack([logits[:, self.groups == g].amax(dim=1) if bool((self.groups == g).any()) else empty
                            for g in range(len(CLASS_FOLDERS) + 1)], dim=1)


UNMAPPED = "unmapped ImageNet class"


def in9_classifier(classifier: Any, mapping: np.ndarray) -> Any:
    """The same classifier (layers, preprocessing, device, batching) with In9Logits on top of its output."""
    module = In9Logits(classifier.module, mapping)
    layers = {name: (path if name == "logits" else f"inner.{path}") for name, path in classifier.layer_paths.items()}
    extra = {k: getattr(classifier, k) for k in ("amp", "batch_size") if hasattr(classifier, k)}
    return type(classifier)(module, layers, classifier.preprocess, classifier.conv_layer, classifier.device, **extra)


# ---------------------------------------------------------------- the reference's preprocessing

def challenge_preprocess(n_classes: int) -> Callable[[np.ndarray], torch.Tensor]:
    """in9_eval.py's input: ToTensor (uint8 HWC -> float CHW / 255) on the unresized image, then the
    training set's normalisation: IN-9's for a 9-class (IN-9L) model, ImageNet's otherwise."""
    mean, std = (IN9_MEAN, IN9_STD) if n_classes == len(CLASS_FOLDERS) else (IMAGENET_MEAN, IMAGENET_STD)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def preprocess(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
        return x.sub(mean_t).div(std_t)

    return preprocess


def with_preprocess(classifier: Any, preprocess: Callable[[np.ndarray], torch.Tensor]) -> Any:
    """The same classifier (module, layers, device, batching) with another input preprocessing."""
    extra = {k: getattr(classifier, k) for k in ("amp", "batch_size") if hasattr(classifier, k)}
    return type(classifier)(classifier.module, dict(classifier.layer_paths), preprocess, classifier.conv_layer,
                            classifier.device, **extra)
