"""Subject models: small CNN classifiers trained on CPU, cached by a content hash of their config.

A trained subject lives in <cache>/subjects/<hash of full config + training data>/ as
model.safetensors plus card.json; the weights' sha256 names the subject in every downstream cache
key, so features extracted from a retrained model can never be confused with the old ones.

A subject is trained from scratch, or fine-tuned from a base network (`BaseNet`: itself a cached
subject, trained once on unbiased data and shared by a zoo), as real Waterbirds and ImageNet-9
subjects are fine-tuned from a pretrained backbone; the base's cache key enters the subject's.
docs/subjects.md gives the measurements behind the zoos' construction.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from pydantic import BaseModel, ConfigDict, StringConstraints
from torch import nn

from fexbench.core.cache import ArrayCache, atomic_write, atomic_write_json, build_once, file_sha256, stable_hash
from fexbench.core import profile, threads
from fexbench.core.contract import Subject
from fexbench.data.imageset import ImageSet

from tqdm.auto import tqdm

def _writable(preprocess: Callable[[np.ndarray], torch.Tensor]) -> Callable[[np.ndarray], torch.Tensor]:
    """The preprocess, given a writeable copy when the images are read-only (explainers' probe
    arrays are): torch and image processors want buffers they may write."""
    def call(images: np.ndarray) -> torch.Tensor:
        return preprocess(images if getattr(images, "flags", None) is None or images.flags.writeable else np.array(images))
    return call


class TorchClassifier:
    """A torch classifier seen through named layers: the one interface tasks and explainers use.

    `layers` maps fexbench's layer names to module paths in `module.named_modules()`; "logits" is
    the module's output. Activations are read with forward hooks, so any architecture (our CNN,
    a transformers or timm model) fits without changing its code.
    """

    def __init__(self, module: nn.Module, layers: dict[str, str], preprocess: Callable[[np.ndarray], torch.Tensor],
                 conv_layer: str | None = None, device: str = "cpu"):
        modules = dict(module.named_modules())
        for name, path in layers.items():
            if name != "logits" and path not in modules:
                raise KeyError(f"layer {name!r} points at {path!r}, which is not a module of "
                               f"{type(module).__name__}; modules are {sorted(m for m in modules if m)[:40]}")
        self.module, self.layer_paths, self.preprocess = module.to(device).eval(), dict(layers), _writable(preprocess)
        self.conv_layer, self.device = conv_layer, device

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layer_paths)

    def _check(self, layers: tuple[str, ...]) -> None:
        for layer in layers:
            if layer not in self.layer_paths:
                raise KeyError(f"no layer {layer!r}; layers are {list(self.layer_paths)}")

    def forward_layers(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Raw activations (conv maps stay (N, C, H, W)); gradients flow, for Grad-CAM and the like."""
        self._check(layers)
        modules = dict(self.module.named_modules())
        out: dict[str, torch.Tensor] = {}
        hooks = [modules[self.layer_paths[name]].register_forward_hook(
                     lambda _m, _i, o, name=name: out.__setitem__(name, o[0] if isinstance(o, tuple) else o))
                 for name in layers if name != "logits"]
        try:
            logits = self.module(x.to(self.device))
        finally:
            for h in hooks:
                h.remove()
        if "logits" in layers:
            out["logits"] = getattr(logits, "logits", logits)
        return out

    @torch.no_grad()
    def activations(self, images: np.ndarray, layers: tuple[str, ...] = ("penultimate", "logits"),
                    batch_size: int = 256, progress: bool = False) -> dict[str, np.ndarray]:
        """Activations of uint8 NHWC images, pooled to (N, C): conv maps over space, token
        sequences (N, T, D) of a transformer block over tokens, so a unit is one number."""
        self._check(layers)
        parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
        starts = range(0, len(images), batch_size)
        for start in tqdm(starts, desc="extract", leave=False, disable=not progress or len(starts) < 5):
            acts = self.forward_layers(self.preprocess(images[start:start + batch_size]), layers)
            for layer in layers:
                a = acts[layer].float()
                pooled = a.mean(dim=(2, 3)) if a.ndim == 4 else a.mean(dim=1) if a.ndim == 3 else a.flatten(1)
                parts[layer].append(pooled.cpu().numpy())
        return {layer: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for layer, v in parts.items()}


SMALL_CNN_LAYERS = {"block1": "block1", "block2": "block2", "block3": "block3", "penultimate": "hidden",
                    "logits": "logits"}


class SmallCNN(nn.Module):
    """Three conv blocks, global max pool, a hidden layer (the penultimate layer), a linear head.

    Max pooling lets the net detect an object part anywhere; with average pooling the background
    dominated and shape was learned too slowly for a CPU budget (65% vs 99% accuracy at rho=0.5).
    """

    def __init__(self, n_classes: int, width: int = 16, hidden: int = 64):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.block1 = block(3, width)
        self.block2 = nn.Sequential(nn.MaxPool2d(2), block(width, 2 * width))
        self.block3 = nn.Sequential(nn.MaxPool2d(2), block(2 * width, 4 * width))
        self.hidden = nn.Sequential(nn.Linear(4 * width, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.block3(self.block2(self.block1(x)))
        return self.head(self.hidden(b3.amax(dim=(2, 3))))


def small_cnn_classifier(module: SmallCNN) -> TorchClassifier:
    return TorchClassifier(module, SMALL_CNN_LAYERS, to_tensor, conv_layer="block3")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    if not images.flags.writeable:  # explainers' probe arrays are read-only; torch wants its own buffer
        images = np.array(images)
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass(frozen=True)
class TrainConfig:
    n_classes: int
    width: int = 16
    hidden: int = 64
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def train_cnn(train: ImageSet, config: TrainConfig, progress: bool = True, label: str | None = None,
              init: dict[str, torch.Tensor] | None = None) -> SmallCNN:
    """Plain ERM with Adam, deterministic given the seed and independent of the machine: always
    one torch thread (fexbench.core.threads), so the weights do not depend on the number of cores.
    `label` names the progress bar ("train cnn-rho0.9-s1 (3/10)"; default: the training set).
    `init`: a state dict to start from (fine-tuning all layers from a base network), else the
    seed's random initialisation."""
    with threads.component("subject-training"):
        return _train_cnn(train, config, progress, label, init)


def _train_cnn(train: ImageSet, config: TrainConfig, progress: bool, label: str | None,
               init: dict[str, torch.Tensor] | None = None) -> SmallCNN:
    torch.manual_seed(config.seed)
    model = SmallCNN(config.n_classes, config.width, config.hidden)
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x_all, y_all = to_tensor(train.images), torch.from_numpy(train.labels.astype(np.int64))
    gen = torch.Generator().manual_seed(config.seed)
    steps = range(config.epochs)
    bar = tqdm(steps, desc=f"train {label or train.name}", unit="epoch", leave=False, disable=not progress)
    model.train()
    for _ in bar:
        order = torch.randperm(len(y_all), generator=gen)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class SubjectCard(BaseModel):
    """card.json of a trained subject: what it was trained from, and its weights' sha256."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    config_key: str
    train_config: dict[str, Any]
    data: dict[str, Any]
    train_data_sha256: Sha256
    class_names: list[str]
    weights_sha256: Sha256
    init: dict[str, Any] | None = None  # fine-tuned from a base network: its config key and weights' sha256
    train_cpu_s: float | None = None  # process CPU seconds of this training (one thread), for the record


@dataclass(frozen=True)
class BaseNet:
    """A base network that subjects are fine-tuned from (all layers): a subject itself, trained
    once from scratch on unbiased data and cached by its own config and data description.
    `make_train_set` builds its training data when it is not cached."""

    name: str
    config: TrainConfig
    data_key: dict[str, Any]
    make_train_set: Callable[[], ImageSet]

    @property
    def key(self) -> str:
        return subject_key(self.config, self.data_key)


def subject_key(config: TrainConfig, data_key: dict[str, Any], base: BaseNet | str | None = None) -> str:
    """The cache key of a subject: its architecture, training config and training-data description,
    and the base network it is fine-tuned from (its key), if any."""
    spec: dict[str, Any] = {"arch": "SmallCNN/v3", "train": asdict(config), "data": data_key}
    if base is not None:
        spec["init"] = base if isinstance(base, str) else base.key
    return stable_hash(spec, 24)


def is_cached(cache_dir: str | Path, config: TrainConfig, data_key: dict[str, Any], base: BaseNet | None = None,
              folder: str = "subjects") -> bool:
    """Whether a subject's files are in the cache (they are still verified when loaded)."""
    path = Path(cache_dir) / folder / subject_key(config, data_key, base)
    return (path / "model.safetensors").exists() and (path / "card.json").exists()


def load_or_train(cache_dir: str | Path, name: str, config: TrainConfig, class_names: tuple[str, ...],
                  make_train_set: Callable[[], ImageSet], data_key: dict[str, Any],
                  progress: bool = True, position: str = "", base: BaseNet | None = None,
                  folder_name: str = "subjects") -> Subject:
    """The subject for (config, training data): loaded from the cache, or trained and cached.
    `position` is shown after the name in the training bar, e.g. "(3/10)". With a `base`, the
    subject is fine-tuned from the base network (loaded or trained and cached first, under
    <cache>/bases/: it is no subject of any task).

    `data_key` describes the training data fully (generator, seed, rho, size ...), so the cache key
    is known before the data is built; the data's content hash is stored in the card. The folder is
    read back only when its files match the digests recorded when they were written and the card
    describes this very config (fexbench.core.cache.build_once); else the subject is trained again.
    """
    key = subject_key(config, data_key, base)
    folder = Path(cache_dir) / folder_name / key
    weights, card_path = folder / "model.safetensors", folder / "card.json"
    init = None if base is None else {"base": base.key}

    def load() -> tuple[SmallCNN, dict[str, Any]]:
        card = SubjectCard.model_validate_json(card_path.read_bytes()).model_dump()
        expected = json.loads(json.dumps({"config_key": key, "train_config": asdict(config), "data": data_key},
                                         default=str))
        for field_name, value in expected.items():
            if card[field_name] != value:
                raise ValueError(f"card.json {field_name} does not describe this subject")
        if (card["init"] or {}).get("base") != (init or {}).get("base"):
            raise ValueError("card.json init does not describe this subject's base network")
        if card["weights_sha256"] != file_sha256(weights):
            raise ValueError("card.json weights_sha256 is not the weights file's")
        model = SmallCNN(config.n_classes, config.width, config.hidden)
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), card

    def train() -> tuple[SmallCNN, dict[str, Any]]:
        from fexbench.core.release import refuse_training
        refuse_training(f"subject {name!r} (cache key {key})")  # a run on a release trains nothing
        start_state = None
        if base is not None:
            parent = load_or_train(cache_dir, base.name, base.config, class_names, base.make_train_set,
                                   base.data_key, progress=progress, folder_name="bases")
            init["base_weights_sha256"] = parent.weights_hash
            start_state = {k: v.detach().clone() for k, v in parent.model.module.state_dict().items()}
        data = make_train_set()
        started = time.process_time()
        model = train_cnn(data, config, progress, label=f"{name} {position}".strip(), init=start_state)
        cpu_s = time.process_time() - started
        atomic_write(weights, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp))
        card = {"name": name, "config_key": key, "train_config": asdict(config), "data": data_key,
                "train_data_sha256": data.content_hash, "class_names": list(class_names),
                "weights_sha256": file_sha256(weights), "init": init, "train_cpu_s": round(cpu_s, 3)}
        atomic_write_json(card_path, card)
        return model, card

    with profile.stage("subjects"):
        model, card = build_once(folder, load, train)
    return Subject(name=name, model=small_cnn_classifier(model), class_names=class_names,
                   weights_hash=card["weights_sha256"], config=card)


def cached_activations(cache: ArrayCache, subject: Subject, data: ImageSet,
                       layers: tuple[str, ...] = ("penultimate", "logits"), progress: bool = False) -> dict[str, np.ndarray]:
    """Activations computed once per (weights, data content, layers)."""
    key = {"weights": subject.weights_hash, "data": data.content_hash, "layers": list(layers)}
    with profile.stage("extract"):
        return cache.get_or_compute("activations", key,
                                    lambda: subject.model.activations(data.images, layers, progress=progress))
