"""Training the embedded CLIP on the synthetic world.

A small CLIP (a max-pool CNN vision tower registered with timm, or open_clip's ModifiedResNet; a
2-layer text transformer; the word-level tokenizer) registered with open_clip as a custom model
config and trained contrastively on image-caption pairs of ImageNet-9-layout scenes whose seeds are
not the tasks' probe or test seeds. The loss is CLIP's symmetric InfoNCE with one change: a
caption's targets are all the batch's images it describes (attribute positives), since "a heart"
describes every heart of a batch and CLIP's pair-only targets would push those apart. Zero-shot
accuracies on object, colour and background are measured and recorded in its card.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fexbench.data import world
from fexbench.core.cache import atomic_write_json, build_once, stable_hash
from fexbench.core.seeds import derive_seed
from fexbench.resources.clip.model import ClipModel, EOS, PAD, WordTokenizer, _register_timm_tower, _tensor_preprocess, world_words


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
