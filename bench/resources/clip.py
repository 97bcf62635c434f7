"""The vision-language model (CLIP) that FALCON and CLIP-Dissect read images and words with.

One interface, `ClipModel` (encode images, encode texts, preprocess, weights hash), over two paths,
both through `open_clip.create_model_and_transforms`:

- embedded default: a small CLIP (a max-pool CNN vision tower registered with timm, or open_clip's
  ModifiedResNet; a 2-layer text transformer; a word-level tokenizer over the world's lemmas)
  registered with open_clip as a custom model config and trained contrastively on image-caption
  pairs of the synthetic world, on ImageNet-9-layout scenes (every shape on every background)
  whose seeds are not the tasks' probe or test seeds. The loss is CLIP's symmetric InfoNCE with
  one change: a caption's targets are all the batch's images it describes (attribute positives),
  since "a heart" describes every heart of a batch and CLIP's pair-only targets would push those
  apart. It is cached by a hash of its full config and world.VERSION; its card records the
  zero-shot accuracies on object, colour and background.
- real: any open_clip model name with a pretrained tag (e.g. ViT-B-32 + laion2b_s34b_b79k) or a
  local checkpoint file (open_clip's own tokenizer and transforms).

Why a word-level tokenizer for the embedded model: the world's captions use ~100 words, so a
lemma per token keeps the text tower tiny; the pooled token is an explicit end token
(pool_type "eos"), because open_clip's default pools the highest token id.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from fexbench.core import threads
from fexbench.data import world
from fexbench.core.cache import ArrayCache, atomic_write, atomic_write_json, build_once, file_sha256, stable_hash
from fexbench.core.seeds import derive_seed
from fexbench.data.concepts import lemma

_WORD = re.compile(r"[a-z]+")
PAD, UNK, EOS = 0, 1, 2
_SPECIAL = ("<pad>", "<unk>", "<eos>")


class WordTokenizer:
    """Texts -> (N, context_length) token ids: one token per lemma, then <eos>, then padding.

    Lemmatising (fexbench.data.concepts.lemma) lets "trees" and "tree" share a token, so single concept words reach
    the same embedding row as the captions that trained it. Unknown words map to <unk>.
    """

    def __init__(self, words: Sequence[str], context_length: int):
        words = sorted({lemma(w) for w in words})
        self.vocab = _SPECIAL + tuple(words)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context_length = context_length

    def __len__(self) -> int:
        return len(self.vocab)

    def ids(self, text: str) -> list[int]:
        tokens = [self.index.get(lemma(w), UNK) for w in _WORD.findall(text.lower())]
        return tokens[:self.context_length - 1] + [EOS]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros((len(texts), self.context_length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.ids(text)
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def world_words() -> list[str]:
    """Every word the world's texts use: caption templates, synonyms, colours, sizes, concept words."""
    from fexbench.data.world_concepts import DISTRACTORS, GROUP_WORDS

    texts = [t.replace("{obj}", " ").replace("{bg}", " ") for t in world._TEMPLATES]
    texts += [p for forms in world.SYNONYMS.values() for p in forms] + list(world.SYNONYMS)
    texts += list(world.COLOURS) + list(world.SIZES) + list(DISTRACTORS) + ["a", "an"]
    texts += [w for words in GROUP_WORDS.values() for w in words] + list(GROUP_WORDS)
    return sorted({w for t in texts for w in _WORD.findall(t.lower())})


# ---------------------------------------------------------------- a small max-pool CNN tower for open_clip

class WorldCNN(torch.nn.Module):
    """conv3x3-BN-ReLU blocks, each after a 2x2 max pool, then a global max pool and a linear map.

    A timm-compatible trunk (open_clip builds it through timm by name). Max pooling lets a unit
    detect an object part anywhere; open_clip's ModifiedResNet (anti-aliasing average pools, an
    attention pool) learned the world's shapes several times slower per CPU second at 32x32.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), num_classes: int = 0, global_pool: str = "max",
                 in_chans: int = 3, **_: Any):
        super().__init__()
        blocks, cin = [], in_chans
        for i, width in enumerate(widths):
            layers = [torch.nn.MaxPool2d(2)] if i else []
            layers += [torch.nn.Conv2d(cin, width, 3, padding=1, bias=False), torch.nn.BatchNorm2d(width),
                       torch.nn.ReLU(inplace=True)]
            blocks.append(torch.nn.Sequential(*layers))
            cin = width
        self.blocks = torch.nn.Sequential(*blocks)
        self.num_features = cin
        self.global_pool = global_pool or "max"
        self.fc = torch.nn.Linear(cin, num_classes) if num_classes else torch.nn.Identity()
        self.default_cfg = self.pretrained_cfg = {"pool_size": None, "input_size": (3, 32, 32)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.amax(dim=(2, 3)) if self.global_pool == "max" else x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool or "max"
        self.fc = torch.nn.Linear(self.num_features, num_classes) if num_classes else torch.nn.Identity()


def _register_timm_tower(name: str, widths: Sequence[int]) -> None:
    """Register WorldCNN(widths) with timm under `name` (timm's registry, like open_clip's, is per process)."""
    import timm
    from timm.models import register_model

    if timm.is_model(name):
        return

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> WorldCNN:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; load a checkpoint file instead")
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
        return WorldCNN(widths, **kwargs)

    entrypoint.__name__ = name
    register_model(entrypoint)


# ---------------------------------------------------------------- the one interface

class ClipModel:
    """An open_clip model with its tokenizer and preprocessing: what the rest of fexbench sees.

    encode_images takes uint8 (N, H, W, 3) images of any size and applies the model's own
    preprocess (open_clip's resize, centre crop, normalise); outputs are L2-normalised float32.
    """

    def __init__(self, model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, name: str,
                 weights_hash: str, card: dict[str, Any] | None = None, device: str = "cpu"):
        self.model = model.to(device).to(memory_format=torch.channels_last).eval()  # faster CPU convs
        self.preprocess_pil, self.tokenizer = preprocess, tokenizer
        self.name, self.weights_hash, self.card, self.device = name, weights_hash, dict(card or {}), device
        self.image_size = _image_size(model)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC -> the model's input tensor, through open_clip's own transform, image by image."""
        from PIL import Image

        images = _check_images(images)
        if not len(images):
            return torch.zeros((0, 3, self.image_size, self.image_size))
        return torch.stack([self.preprocess_pil(Image.fromarray(img)) for img in images])

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        images = _check_images(images)
        parts = [self.model.encode_image(self.preprocess(images[s:s + batch_size]).to(self.device).contiguous(
                     memory_format=torch.channels_last), normalize=True) for s in range(0, len(images), batch_size)]
        return torch.cat(parts).float().cpu().numpy() if parts else np.zeros((0, self.embed_dim), np.float32)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        parts = [self.model.encode_text(self.tokenizer(texts[s:s + batch_size]).to(self.device), normalize=True)
                 for s in range(0, len(texts), batch_size)]
        return torch.cat(parts).float().cpu().numpy() if parts else np.zeros((0, self.embed_dim), np.float32)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.nn.Linear):
            return proj.out_features
        if proj is not None:
            return int(proj.shape[-1])
        return int(self.model.encode_text(self.tokenizer(["a"])).shape[-1])


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


# ---------------------------------------------------------------- real path

def load_clip(model_name: str, pretrained: str | None = None, device: str = "cpu",
              tokenizer: Callable | None = None, config_file: str | None = None) -> ClipModel:
    """Any open_clip model: a pretrained tag (downloaded by open_clip) or a local checkpoint file.

    `config_file`: an open_clip model config (JSON: embed_dim, vision_cfg, text_cfg) registered
    first with open_clip.add_model_config, for an architecture open_clip does not ship; the
    model's name is the file's stem. The weights hash is the file's sha256 for a local file, else
    a hash of (name, tag).
    """
    import open_clip

    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"open_clip model config {config_file!r} does not exist")
        open_clip.add_model_config(config_file)

    if pretrained and os.path.sep in pretrained and not os.path.isfile(pretrained):
        raise FileNotFoundError(f"CLIP checkpoint {pretrained!r} does not exist")
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=device)
    if pretrained and os.path.isfile(pretrained):
        weights_hash = file_sha256(pretrained)
    else:
        weights_hash = stable_hash({"open_clip": model_name, "pretrained": pretrained}, 32)
    tok = tokenizer or open_clip.get_tokenizer(model_name)
    return ClipModel(model, preprocess, tok, f"{model_name}:{pretrained or 'random'}", weights_hash,
                     {"model_name": model_name, "pretrained": pretrained}, device)


# ---------------------------------------------------------------- embedded default

@dataclass(frozen=True)
class EmbeddedClipConfig:
    """The embedded CLIP: architecture, data and training. Every field enters the cache key."""

    image_size: int = 32
    vision: str = "world_cnn"                     # or "modified_resnet" (open_clip's RN tower)
    vision_widths: tuple[int, ...] = (16, 32, 64, 128)  # world_cnn
    vision_layers: tuple[int, int, int, int] = (1, 1, 1, 1)  # modified_resnet
    vision_width: int = 16                        # modified_resnet
    embed_dim: int = 128
    text_width: int = 64
    text_heads: int = 4
    text_layers: int = 2
    context_length: int = 20
    n_pairs: int = 10000
    epochs: int = 9
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    partial_caption_p: float = 0.6
    partial_kinds: tuple[float, ...] = (0.15, 0.55, 0.15, 0.15)  # P(place / shape / colour+shape / colour)
    negatives_per_batch: int = 64
    positives: str = "attributes"                 # or "pair": CLIP's own targets, the caption's image only
    seed: int = 0

    def __post_init__(self) -> None:
        if self.positives not in ("attributes", "pair"):
            raise ValueError(f"EmbeddedClipConfig.positives must be 'attributes' or 'pair', not {self.positives!r}")
        if len(self.partial_kinds) != 4 or min(self.partial_kinds) < 0 or sum(self.partial_kinds) <= 0:
            raise ValueError("EmbeddedClipConfig.partial_kinds must be 4 non-negative weights (place, shape, "
                             f"colour+shape, colour) with a positive sum, not {self.partial_kinds!r}")

    @property
    def key(self) -> str:
        return stable_hash({"arch": "fexbench-clip/v1", "config": asdict(self), "words": world_words(),
                            "world": world.VERSION}, 16)

    @property
    def model_name(self) -> str:
        return f"fexbench-world-clip-{self.key}"

    @property
    def timm_name(self) -> str:
        return f"fexbench_world_cnn_{'_'.join(map(str, self.vision_widths))}"

    def open_clip_config(self, vocab_size: int) -> dict[str, Any]:
        if self.vision == "world_cnn":
            vision = {"image_size": self.image_size, "timm_model_name": self.timm_name, "timm_pool": "max",
                      "timm_proj": ""}
        elif self.vision == "modified_resnet":
            vision = {"image_size": self.image_size, "layers": list(self.vision_layers), "width": self.vision_width,
                      "patch_size": None}
        else:
            raise ValueError(f"EmbeddedClipConfig.vision must be 'world_cnn' or 'modified_resnet', not {self.vision!r}")
        return {"embed_dim": self.embed_dim,
                "vision_cfg": vision,
                "text_cfg": {"context_length": self.context_length, "vocab_size": vocab_size,
                             "width": self.text_width, "heads": self.text_heads, "layers": self.text_layers,
                             "pool_type": "eos", "eos_id": EOS, "pad_id": PAD}}

    def tokenizer(self) -> WordTokenizer:
        return WordTokenizer(world_words(), self.context_length)


def embedded_clip_id(config: EmbeddedClipConfig | None = None) -> str:
    """The default CLIP's identity, for explainer configs (so results change key when it changes)."""
    return f"embedded:{(config or EmbeddedClipConfig()).key}"


def register_config(config: EmbeddedClipConfig, cache_dir: str | Path) -> str:
    """Write the open_clip JSON config and register it (open_clip keeps the registry per process)."""
    import open_clip

    if config.vision == "world_cnn":
        _register_timm_tower(config.timm_name, config.vision_widths)
    folder = Path(cache_dir) / "clip" / "configs" / config.key
    path = folder / f"{config.model_name}.json"
    build_once(path, lambda: json.loads(path.read_text(encoding="utf-8")),
               lambda: atomic_write_json(path, config.open_clip_config(len(config.tokenizer()))))
    if config.model_name not in open_clip.list_models():
        open_clip.add_model_config(folder)
    return config.model_name


def _seed(*parts: Any) -> int:
    return derive_seed("fexbench-clip", *parts)


@dataclass(frozen=True)
class TrainingPairs:
    """Images, one caption set per epoch, and what each caption names (for attribute positives).

    names[epoch] is (N, 3) bool: does caption i name the shape, the colour, the background.
    """

    images: np.ndarray
    captions: list[tuple[str, ...]]
    names: list[np.ndarray]
    scenes: world.Scenes

    def attributes(self) -> np.ndarray:
        """(N, 3) shape, colour and background codes of the scenes."""
        return np.stack([self.scenes.shape, self.scenes.colour, self.scenes.background], axis=1)


def training_pairs(config: EmbeddedClipConfig) -> TrainingPairs:
    """Images and one caption set per epoch (different synonyms and templates each epoch).

    A share `partial_caption_p` of captions name only the place, the shape, colour and shape, or
    the colour ("lava", "a heart", "a red heart", "red"; mostly the shape, by `partial_kinds`), so
    one-word prompts (CLIP-Dissect's concepts) land near the images they describe, and the shape,
    which the vision tower learns last, gets a signal of its own (the README's table of recipes:
    object zero-shot 0.56 with a third of each kind, 0.66 shape-heavy, same cost).
    """
    scenes, _ = world.imagenet9_scenes(config.n_pairs, _seed("train", config.seed), p_native=0.0)
    images = world.render(scenes, config.image_size)[0]
    rng = np.random.default_rng(_seed("partial", config.seed))
    epochs, names = [], []
    for epoch in range(config.epochs):
        full = world.captions(scenes, _seed("captions", config.seed, epoch))
        partial, partial_names = _partial_captions(scenes, rng, config.partial_kinds)
        use = rng.random(len(scenes)) < config.partial_caption_p
        epochs.append(tuple(p if u else f for f, p, u in zip(full, partial, use)))
        names.append(np.where(use[:, None], partial_names, True))
    return TrainingPairs(images, epochs, names, scenes)


def _partial_captions(scenes: world.Scenes, rng: np.random.Generator,
                      kinds: Sequence[float] = (0.25, 0.25, 0.25, 0.25)) -> tuple[list[str], np.ndarray]:
    """Captions naming only the place, the shape, colour and shape, or the colour ("lava", "a heart",
    "a red heart", "red"; drawn with probabilities `kinds`), and (N, 3) flags: names shape,
    colour, background."""
    out = []
    p = np.asarray(kinds, dtype=float)
    kind, form = rng.choice(4, size=len(scenes), p=p / p.sum()), rng.random(len(scenes))
    for i in range(len(scenes)):
        shape = world.SYNONYMS[world.SHAPES[scenes.shape[i]]]
        place = world.SYNONYMS[world.BACKGROUNDS[scenes.background[i]]]
        colour = world.COLOUR_NAMES[scenes.colour[i]]
        if kind[i] == 0:
            out.append(place[int(form[i] * len(place))])
        elif kind[i] == 1:
            out.append(f"a {shape[int(form[i] * len(shape))]}")
        elif kind[i] == 2:
            out.append(f"a {colour} {shape[int(form[i] * len(shape))]}")
        else:
            out.append(colour)
    names = np.stack([(kind == 1) | (kind == 2), kind >= 2, kind == 0], axis=1)
    return out, names


def positives(attributes: np.ndarray, names: np.ndarray) -> torch.Tensor:
    """(n captions, n images) bool: image j shows everything caption i names.

    A caption's own image always qualifies; "a heart" also describes every other heart of the
    batch, so with these targets such images are not pushed apart as false negatives.
    """
    a = torch.as_tensor(attributes)
    same = a[:, None, :] == a[None, :, :]                       # (n, n, 3)
    return (same | ~torch.as_tensor(names)[:, None, :]).all(dim=2)


def _tensor_preprocess(images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Fast path equal to open_clip's transform when images already have the model's size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"fast preprocess needs {size}x{size} images, got {tuple(x.shape[-2:])}")
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
               targets: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE; texts beyond the images' count are extra negatives for the images.

    Those are distractor captions ("a bicycle on the sea"): without them the words they use never
    move from their random initial embeddings, and such captions retrieve world images as if
    they named only the background. `targets` (n captions x n images, bool) spreads each side's
    target over all its positives (the identity when None: the pair only).
    """
    n = len(img)
    if targets is None:
        targets = torch.eye(n, dtype=torch.bool)
    t = targets.float()
    image_logits = (scale * img @ txt.T).log_softmax(dim=1)[:, :n]   # (images, texts)
    text_logits = (scale * txt[:n] @ img.T).log_softmax(dim=1)       # (texts, images)
    image_loss = -(image_logits * (t.T / t.T.sum(1, keepdim=True))).sum(1).mean()
    text_loss = -(text_logits * (t / t.sum(1, keepdim=True))).sum(1).mean()
    return (image_loss + text_loss) / 2


def train_embedded_clip(config: EmbeddedClipConfig, cache_dir: str | Path, progress: bool = False,
                        log: Callable[[str], None] | None = None,
                        on_epoch: Callable[[torch.nn.Module, int], None] | None = None) -> torch.nn.Module:
    """Contrastive training (CLIP's loss with distractor captions as extra negatives, AdamW,
    warmup + cosine), deterministic on CPU."""
    import open_clip

    name = register_config(config, cache_dir)
    torch.manual_seed(config.seed)
    with _without_log_record("No pretrained weights loaded"):  # open_clip's notice; training from scratch is the point
        model = open_clip.create_model(name, pretrained=None).to(memory_format=torch.channels_last)
    tokenizer = config.tokenizer()
    pairs = training_pairs(config)
    images, caption_sets, attributes = pairs.images, pairs.captions, pairs.attributes()
    x_all = _tensor_preprocess(images, config.image_size, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    x_all = x_all.contiguous(memory_format=torch.channels_last)  # 4-8x faster convs on CPU (oneDNN)
    from fexbench.resources.caption_bank import distractor_captions

    negatives = tokenizer(distractor_captions(2000, _seed("negatives", config.seed)))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = math.ceil(len(x_all) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    for epoch, captions in enumerate(caption_sets):
        tokens = tokenizer(captions)
        order = torch.randperm(len(x_all), generator=gen)
        for idx in (order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)):
            if len(idx) < 2:
                continue
            neg_idx = torch.randint(0, len(negatives), (config.negatives_per_batch,), generator=gen)
            img = model.encode_image(x_all[idx], normalize=True)
            txt = model.encode_text(torch.cat([tokens[idx], negatives[neg_idx]]), normalize=True)
            targets = (positives(attributes[idx.numpy()], pairs.names[epoch][idx.numpy()])
                       if config.positives == "attributes" else None)
            loss = _clip_loss(img, txt, model.logit_scale.exp(), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
        if log:
            log(f"clip epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f} "
                f"wall {time.perf_counter() - start:.0f}s cpu {time.process_time() - cpu:.0f}s")
        if on_epoch:
            model.eval()
            on_epoch(model, epoch + 1)
            model.train()
    model.eval()
    return model


class _without_log_record:
    """Drop log records containing `text` from the root logger while the block runs."""

    def __init__(self, text: str):
        self.filter = logging.Filter()
        self.filter.filter = lambda record: text not in record.getMessage()  # type: ignore[method-assign]

    def __enter__(self) -> None:
        logging.getLogger().addFilter(self.filter)

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeFilter(self.filter)


# ---------------------------------------------------------------- zero-shot evaluation

def _article(phrase: str) -> str:
    return phrase if phrase.startswith(("the ", "a ", "an ")) else ("an " if phrase[0] in "aeiou" else "a ") + phrase


def zero_shot_prompts() -> dict[str, dict[str, list[str]]]:
    """Prompt ensembles per attribute value: object and background synonyms, colour on every shape."""
    return {
        "object": {s: [_article(p) for p in world.SYNONYMS[s]] for s in world.SHAPES},
        "background": {b: list(world.SYNONYMS[b]) for b in world.BACKGROUNDS},
        "colour": {c: [f"{_article(c)} {s}" for s in world.SHAPES] for c in world.COLOUR_NAMES},
    }


def zero_shot_accuracy(clip: ClipModel, n: int = 900, seed: int = 1, image_size: int = 32) -> dict[str, float]:
    """Accuracy of argmax over prompt-ensemble embeddings on fresh scenes (every shape on every background)."""
    scenes, _ = world.imagenet9_scenes(n, _seed("zero-shot", seed), p_native=0.0)
    emb = clip.encode_images(world.render(scenes, image_size)[0])
    truth = {"object": scenes.shape, "background": scenes.background, "colour": scenes.colour}
    out = {}
    for attribute, prompts in zero_shot_prompts().items():
        classes = []
        for texts in prompts.values():
            t = clip.encode_texts(texts).mean(axis=0)
            classes.append(t / np.linalg.norm(t))
        pred = (emb @ np.stack(classes).T).argmax(axis=1)
        out[attribute] = float((pred == truth[attribute]).mean())
    return out


# ---------------------------------------------------------------- cache and resource

def load_or_train_embedded(cache_dir: str | Path, config: EmbeddedClipConfig | None = None, device: str = "cpu",
                           progress: bool = False, log: Callable[[str], None] | None = None) -> ClipModel:
    """The embedded CLIP: loaded by path through open_clip from <cache>/clip/<key>/, or trained and cached."""
    config = config or EmbeddedClipConfig()
    folder = Path(cache_dir) / "clip" / config.key
    weights, card_path = folder / "open_clip_model.safetensors", folder / "card.json"
    name = register_config(config, cache_dir)

    def load() -> ClipModel:  # read back only when the folder matches its recorded digests
        card = json.loads(card_path.read_text(encoding="utf-8"))
        if not isinstance(card, dict) or card.get("config_key") != config.key \
                or card.get("weights_sha256") != file_sha256(weights):
            raise ValueError("card.json does not describe these weights")
        return load_embedded_checkpoint(weights, config, cache_dir, device, card)

    def train() -> ClipModel:
        start = time.perf_counter()
        with threads.component("clip-training"):  # one thread: faster here, and the same weights on every machine
            model = train_embedded_clip(config, cache_dir, progress, log)
        train_s = time.perf_counter() - start
        atomic_write(weights, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp))
        card = {"model_name": name, "config_key": config.key, "config": asdict(config),
                "world_version": world.VERSION, "open_clip_config": config.open_clip_config(len(config.tokenizer())),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "train_seconds": round(train_s, 1), "weights_sha256": file_sha256(weights)}
        clip = load_embedded_checkpoint(weights, config, cache_dir, device, card)  # the warm path, exactly
        card["zero_shot_accuracy"] = zero_shot_accuracy(clip, image_size=config.image_size)
        clip.card = card
        atomic_write_json(card_path, card)
        if log:
            log(f"embedded CLIP trained in {train_s:.0f}s; zero-shot accuracy {card['zero_shot_accuracy']}")
        return clip

    return build_once(folder, load, train)


def load_embedded_checkpoint(path: str | Path, config: EmbeddedClipConfig, cache_dir: str | Path,
                             device: str = "cpu", card: dict[str, Any] | None = None) -> ClipModel:
    """Load saved weights by file path through the same open_clip call a downloaded model takes."""
    import open_clip

    name = register_config(config, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path), device=device)
    return ClipModel(model, preprocess, config.tokenizer(), name, file_sha256(path), card, device)


def factory(env: Any, model: str | None = None, pretrained: str | None = None, epochs: int | None = None,
            n_pairs: int | None = None, config_file: str | None = None) -> ClipModel:
    """Resource `clip`: the embedded CLIP (trained once per config, cached under env.cache_dir;
    `epochs` / `n_pairs` override its training length), or with `model` (and `pretrained`: a tag
    or a checkpoint file) any open_clip model."""
    device = getattr(env, "device", "cpu")
    if model:
        return load_clip(model, pretrained, device, config_file=config_file)
    overrides = {k: v for k, v in (("epochs", epochs), ("n_pairs", n_pairs)) if v is not None}
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if getattr(env, "progress", False) else None
    return load_or_train_embedded(env.cache_dir, EmbeddedClipConfig(**overrides), device, log=log)


# ---------------------------------------------------------------- for explainers

@lru_cache(maxsize=4)
def _load_clip_cached(model_name: str, pretrained: str | None, device: str) -> ClipModel:
    return load_clip(model_name, pretrained, device)


def resolve_clip(spec: str, pretrained: str | None, context: Any) -> ClipModel:
    """The CLIP an explainer's config asks for.

    "resource" (the default): context.resources["clip"], the embedded CLIP or the one the run config
    names; "embedded:<key>": the same, checked to be that embedded CLIP; anything else: an open_clip
    model name, with `pretrained` a tag or a checkpoint file.
    """
    if spec == "resource" or spec.startswith("embedded"):
        clip = context.resources["clip"]
        key = spec.split(":", 1)[1] if spec.startswith("embedded:") else None
        if key and clip.card.get("config_key") != key:
            raise ValueError(f"explainer asks for embedded CLIP {key}, the `clip` resource is "
                             f"{clip.card.get('config_key') or getattr(clip, 'name', '?')}; use clip_model='resource'")
        return clip
    return _load_clip_cached(spec, pretrained, getattr(context, "device", "cpu"))


def cached_image_embeddings(clip: ClipModel, images: np.ndarray, cache_dir: str | Path | None) -> np.ndarray:
    """CLIP embeddings of a probe set, once per (CLIP weights, image content)."""
    if cache_dir is None:
        return clip.encode_images(images)
    key = {"clip": clip.weights_hash, "clip_name": clip.name,
           "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
           "shape": list(images.shape)}
    return ArrayCache(cache_dir).get_or_compute("clip-image-embeddings", key,
                                                lambda: {"embeddings": clip.encode_images(images)})["embeddings"]
