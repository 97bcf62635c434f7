"""The `clip` shared resource: the embedded CLIP, cached by a hash of its full config and
world.VERSION and verified on load, or a real open_clip model, as the run config asks."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import save_file

from fexbench.core import threads
from fexbench.data import world
from fexbench.core.cache import atomic_write, atomic_write_json, build_once, file_sha256
from fexbench.resources.clip.model import ClipModel, load_clip
from fexbench.resources.clip.training import EmbeddedClipConfig, register_config, train_embedded_clip, zero_shot_accuracy


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
