"""The CLIP interface FALCON and CLIP-Dissect read images and words with, and its loaders.

`ClipModel` (encode images and texts, preprocess, weights hash) over open_clip models: a real one by
name and pretrained tag or a local checkpoint (`load_clip`), or the embedded model, whose vision tower
and word-level tokenizer are defined here. Why a word-level tokenizer: the world's captions use ~100
words, so a lemma per token keeps the text tower tiny; the pooled token is an explicit end token
(pool_type "eos"), because open_clip's default pools the highest token id.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from fexbench.data import world
from fexbench.core.cache import ArrayCache, file_sha256, stable_hash
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


def _tensor_preprocess(images: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Fast path equal to open_clip's transform when images already have the model's size."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        raise ValueError(f"fast preprocess needs {size}x{size} images, got {tuple(x.shape[-2:])}")
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def cached_image_embeddings(clip: ClipModel, images: np.ndarray, cache_dir: str | Path | None) -> np.ndarray:
    """CLIP embeddings of a probe set, once per (CLIP weights, image content)."""
    if cache_dir is None:
        return clip.encode_images(images)
    key = {"clip": clip.weights_hash, "clip_name": clip.name,
           "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
           "shape": list(images.shape)}
    return ArrayCache(cache_dir).get_or_compute("clip-image-embeddings", key,
                                                lambda: {"embeddings": clip.encode_images(images)})["embeddings"]
