"""A zoo of real subjects: pretrained backbones fine-tuned on real data at chosen spurious strengths.

Spurious strength is set the way Waterbirds itself was built: by choosing how many images of each
class sit on "their" place (place == label) versus the other place, here by subsampling groups of
a real split (`subsample_to_rho`). A backbone is then fine-tuned on it, either its head only (a
linear probe: features are extracted once) or the whole network. Fine-tuned subjects are cached
like fexbench.models.subjects.load_or_train: by a content hash of the backbone spec, the backbone's weights
hash, the fine-tuning config and the training data's description, in safetensors.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fexbench.core.cache import ArrayCache, atomic_write, atomic_write_json, build_once, file_sha256, stable_hash
from fexbench.core.references import check_device
from fexbench.core.contract import Subject
from fexbench.data.imageset import DataError, ImageSet
from fexbench.models.pretrained import HeadedClassifier, PretrainedClassifier, amp_dtype, load_classifier, state_dict_sha256
from fexbench.models.subjects import TorchClassifier

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

FINETUNE_VERSION = "finetune/v1"
MODES = ("head", "all")
SUBJECT_KEYS = ("name", "backbone", "rho", "seed", "mode", "epochs", "lr", "batch_size", "weight_decay")


class SubjectSpecError(DataError):
    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key, self.reason = key, reason


def validate_subject(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check one subject entry of a task's `subjects` list (its backbone is checked by fexbench.models.pretrained)."""
    unknown = [k for k in spec if k not in SUBJECT_KEYS]
    if unknown:
        raise SubjectSpecError(unknown[0], f"unknown key; subject keys are {', '.join(SUBJECT_KEYS)}")
    if not isinstance(spec.get("backbone"), Mapping):
        raise SubjectSpecError("backbone", "expected a model spec table (family, model, ...)")
    if "mode" in spec and spec["mode"] not in MODES:
        raise SubjectSpecError("mode", f"expected one of {', '.join(MODES)}, got {spec['mode']!r}")
    if "name" in spec and (not isinstance(spec["name"], str) or not spec["name"]):
        raise SubjectSpecError("name", f"expected a non-empty string, got {spec['name']!r}")

    def number(key: str, value: Any, low: float, high: float = math.inf, integer: bool = False) -> None:
        ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
        if not ok or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise SubjectSpecError(key, f"expected {kind} in [{low:g}, {high:g}], got {value!r}")

    for key, low, high, integer in (("rho", 0, 1, False), ("epochs", 1, math.inf, True), ("lr", 1e-12, math.inf, False),
                                    ("batch_size", 1, math.inf, True), ("weight_decay", 0, math.inf, False),
                                    ("seed", 0, math.inf, True)):
        if key in spec:
            number(key, spec[key], low, high, integer)
    return dict(spec)


# -- spurious strength ------------------------------------------------------------------------------------
def subsample_to_rho(imageset: ImageSet, rho: float, seed: int, label_field: str = "y", place_field: str = "place",
                     tolerance: float = 0.02) -> ImageSet:
    """The largest subset in which P(place == label | label) = rho for every class (hence overall too).

    Waterbirds was built with the same share of each class on its own place (95% of landbirds on
    land, 95% of waterbirds on water); a per-class rho keeps that, whereas matching only the overall
    share could leave one class unbiased. Which images are dropped is random (seeded). Integer counts
    make the realised rho approximate: it is recorded in the provenance, and a DataError is raised
    when it misses rho by more than `tolerance` or a class lacks the images rho needs.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    labels, places = imageset.field(label_field), imageset.field(place_field)
    names = imageset.class_names if label_field == "y" else imageset.metadata_values[label_field]
    rng = np.random.default_rng(seed)
    keep, aligned_total = [], 0
    for y in np.unique(labels):
        own = rng.permutation(np.flatnonzero((labels == y) & (places == y)))
        other = rng.permutation(np.flatnonzero((labels == y) & (places != y)))
        what = (f"cannot subsample {imageset.name} to rho={rho:g}: class {names[y]!r} has {len(own)} images on its "
                f"own {place_field} and {len(other)} on another")
        if rho == 1.0:
            n_own, n_other = len(own), 0
        elif rho == 0.0:
            n_own, n_other = 0, len(other)
        else:
            ratio = rho / (1.0 - rho)  # own images per other image
            n_other = min(len(other), math.floor(len(own) / ratio + 1e-9))
            n_own = min(len(own), round(n_other * ratio))
        if n_own + n_other == 0:
            raise DataError(f"{what}; rho={rho:g} needs {'both' if 0 < rho < 1 else 'the matching'} group(s)")
        realised = n_own / (n_own + n_other)
        if abs(realised - rho) > tolerance or (0 < rho < 1 and n_other == 0):
            raise DataError(f"{what}; the closest subset has rho={realised:.4f}, more than {tolerance:g} away")
        keep += [own[:n_own], other[:n_other]]
        aligned_total += n_own
    index = np.sort(np.concatenate(keep))
    sub = imageset.subset(index, name=f"{imageset.name}-rho{rho:g}")
    provenance = {**dict(imageset.provenance), "rho": f"{rho:g}", "rho_realised": f"{aligned_total / len(index):.6f}",
                  "subsample_seed": str(seed), "subsampled_from": imageset.content_hash}
    return dataclasses.replace(sub, provenance=provenance)


# -- fine-tuning --------------------------------------------------------------------------------------------
def _with_module(classifier: TorchClassifier, module: nn.Module, device: str) -> TorchClassifier:
    if isinstance(classifier, PretrainedClassifier):
        return PretrainedClassifier(module, dict(classifier.layer_paths), classifier.preprocess, classifier.conv_layer,
                                    device, classifier.amp, classifier.batch_size)
    return TorchClassifier(module, dict(classifier.layer_paths), classifier.preprocess, classifier.conv_layer, device)


def _new_head_module(module: nn.Module, head: nn.Linear, share_body: bool) -> nn.Module:
    """The module with a new head; a HeadedClassifier's body is shared (a linear probe does not touch it)."""
    if isinstance(module, HeadedClassifier) and share_body:
        return HeadedClassifier(module.body, head, module.feature_dim, module.normalize).eval()
    new = copy.deepcopy(module)
    if not isinstance(getattr(new, "head", None), nn.Module):
        raise TypeError(f"{type(module).__name__} has no `head` module to replace")
    new.head = head
    return new


def _feature_dim(module: nn.Module) -> int:
    if isinstance(module, HeadedClassifier):
        return module.feature_dim
    head = getattr(module, "head", None)
    if isinstance(head, nn.Linear):
        return head.in_features
    raise TypeError(f"{type(module).__name__}: cannot tell its feature dimension (needs a Linear `head`)")


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def finetune(classifier: TorchClassifier, train: ImageSet, mode: str = "head", epochs: int = 10, lr: float = 1e-3,
             batch_size: int = 64, seed: int = 0, device: str | None = None, amp: bool = True,
             weight_decay: float = 1e-4, features: np.ndarray | None = None, progress: bool = True) -> TorchClassifier:
    """A copy of `classifier` with a new len(train.class_names)-way head, fitted to `train`.

    mode="head": a linear probe. Penultimate features are extracted once (or passed in), standardised,
    and a linear head is trained on them with AdamW; the standardisation is folded into the head's
    weights, so the same lr suits ResNet features (norm ~30) and unit-norm CLIP embeddings.
    mode="all": the whole network is trained with SGD (momentum 0.9, as group DRO's ERM), no data
    augmentation, on inputs preprocessed once (N x 3 x S x S float32 in memory). On cuda, both
    run under autocast (bf16, or fp16 with a gradient scaler) when amp is true.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if len(train) == 0:
        raise DataError(f"{train.name}: no training images")
    device = check_device(device or classifier.device)
    n_classes = len(train.class_names)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(train.labels.astype(np.int64))
    use_amp = amp and device.startswith("cuda")
    steps = range(epochs)
    bar = tqdm(steps, desc=f"finetune {train.name} ({mode})", leave=False, disable=not progress) if tqdm else steps

    if mode == "head":
        if features is None:
            features = classifier.activations(train.images, ("penultimate",))["penultimate"]
        x = torch.from_numpy(np.asarray(features, dtype=np.float32))
        if x.shape[0] != len(train):
            raise ValueError(f"{x.shape[0]} feature rows for {len(train)} training images")
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        z = ((x - mean) / std).to(device)
        y = y_all.to(device)
        probe = nn.Linear(x.shape[1], n_classes).to(device)
        opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in bar:
            for idx in _batches(len(y), batch_size, gen):
                idx = idx.to(device)
                loss = nn.functional.cross_entropy(probe(z[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        head = nn.Linear(x.shape[1], n_classes)
        with torch.no_grad():  # w.(x - m)/s + b = (w/s).x + (b - (w/s).m)
            w = probe.weight.detach().cpu() / std
            head.weight.copy_(w)
            head.bias.copy_(probe.bias.detach().cpu() - w @ mean)
        share = str(classifier.device) == device  # a body moved to another device must not be shared
        return _with_module(classifier, _new_head_module(classifier.module, head, share_body=share).eval(), device)

    module = _new_head_module(classifier.module, nn.Linear(_feature_dim(classifier.module), n_classes),
                              share_body=False).to(device)
    with torch.no_grad():
        x_all = torch.cat([classifier.preprocess(train.images[s:s + batch_size])
                           for s in range(0, len(train), batch_size)])
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    dtype = amp_dtype() if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)
    module.train()
    for _ in bar:
        for idx in _batches(len(y_all), batch_size, gen):
            xb, yb = x_all[idx].to(device, non_blocking=True), y_all[idx].to(device)
            with torch.autocast("cuda", dtype=dtype, enabled=use_amp):
                out = module(xb)
                loss = nn.functional.cross_entropy(getattr(out, "logits", out).float(), yb)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    module.eval()
    return _with_module(classifier, module, device)


# -- the cache -------------------------------------------------------------------------------------------------
def load_or_finetune(cache_dir: str | Path, name: str, backbone_spec: Mapping[str, Any], train_key: Mapping[str, Any],
                     make_train_set: Callable[[], ImageSet], mode: str = "head", epochs: int = 10, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 1e-4, device: str = "cpu",
                     amp: bool = True, progress: bool = True,
                     backbone: tuple[PretrainedClassifier, dict[str, Any]] | None = None,
                     forward_batch_size: int = 64) -> Subject:
    """The fine-tuned subject for (backbone, config, training data): from the cache, or trained and cached.

    The key is stable_hash(backbone spec + backbone weights sha256 + fine-tuning config + train_key),
    known before any image is decoded; `train_key` must describe the training data fully (source,
    metadata sha256, split, rho, subsample seed, image size ...), and the data's content hash is
    recorded in the card. Head-only subjects store only the head (the backbone is reloaded from its
    spec and its weights hash must match); whole-network subjects store all weights. Pass `backbone`
    (load_classifier's result) to load a large backbone once for many subjects. `batch_size` is the
    fine-tuning batch (it enters the key); `forward_batch_size` is the run's batch for forward passes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    classifier, info = backbone if backbone is not None else \
        load_classifier(backbone_spec, device, amp, batch_size=forward_batch_size)
    config = {"mode": mode, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
              "weight_decay": weight_decay}
    spec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(backbone_spec).items()}
    key = stable_hash({"version": FINETUNE_VERSION, "backbone": spec, "backbone_sha256": info["weights_sha256"],
                       "finetune": config, "data": dict(train_key)}, 24)
    folder = Path(cache_dir) / "subjects" / key
    weights, card_path = folder / "trained.safetensors", folder / "card.json"

    def load() -> tuple[nn.Module, dict[str, Any]]:  # only when the folder matches its recorded digests
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(card, dict) or card.get("config_key") != key or card.get("file_sha256") != file_sha256(weights):
            raise ValueError("card.json does not describe these weights")
        return _restore(classifier, mode, load_file(str(weights)), len(card["class_names"])), card

    def train_subject() -> tuple[nn.Module, dict[str, Any]]:
        train = make_train_set()
        features = None
        if mode == "head":
            arrays = ArrayCache(cache_dir)
            features = arrays.get_or_compute(
                "activations", {"weights": info["weights_sha256"], "data": train.content_hash, "layers": ["penultimate"]},
                lambda: classifier.activations(train.images, ("penultimate",)))["penultimate"]
        tuned = finetune(classifier, train, mode, epochs, lr, batch_size, seed, device, amp, weight_decay,
                         features=features, progress=progress)
        module = tuned.module
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
                 if mode == "all" or k.startswith("head.")}
        atomic_write(weights, lambda tmp: save_file(state, tmp))
        card = {"name": name, "config_key": key, "version": FINETUNE_VERSION, "backbone": spec,
                "backbone_sha256": info["weights_sha256"], "finetune": config, "data": dict(train_key),
                "train_data_sha256": train.content_hash, "n_train": len(train),
                "train_provenance": dict(train.provenance), "class_names": list(train.class_names),
                "file_sha256": file_sha256(weights), "weights_sha256": state_dict_sha256(module)}
        atomic_write_json(card_path, card)
        return module, card

    module, card = build_once(folder, load, train_subject)
    device = check_device(device)
    return Subject(name=name, model=_with_module(classifier, module, device), class_names=tuple(card["class_names"]),
                   weights_hash=card["weights_sha256"], config=card)


def _restore(classifier: TorchClassifier, mode: str, state: dict[str, torch.Tensor], n_classes: int) -> nn.Module:
    head = nn.Linear(_feature_dim(classifier.module), n_classes)
    module = _new_head_module(classifier.module, head, share_body=(mode == "head"))
    if mode == "head":
        module.head.load_state_dict({k.removeprefix("head."): v for k, v in state.items()}, strict=True)
    else:
        module.load_state_dict(state, strict=True)
    return module.eval()
