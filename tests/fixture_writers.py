"""Writers of tiny fixtures in exactly the real on-disk formats, shared by several test modules
(the backgrounds-challenge tree and its in_to_in9.json, pretrained models saved with their
libraries' own save calls). A helper module, not a test module: test modules import from here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fexbench.data.imagenet9_challenge import CLASS_FOLDERS

N_CLASSES = 3  # classes of the tiny pretrained models

# Class colours of the fixture: a loader that mixes up folders and labels shows it in the pixels.
_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
                     [128, 128, 128], [255, 128, 0], [0, 0, 0]], dtype=np.uint8)


def write_challenge_tree(root: Path, variants=("original", "mixed_same", "mixed_rand"), n_per_class: int = 2,
                         size: int = 40, width: int | None = None, noise: bool = False) -> Path:
    """`<root>/<variant>/val/<class folder>/*.JPEG`, the release's layout, with ImageNet-style file names.
    Images are size x width (default size + 8), one colour per class, plus pixel noise if asked."""
    rng = np.random.default_rng(0)
    for variant in variants:
        for label, folder in enumerate(CLASS_FOLDERS):
            path = root / variant / "val" / folder
            path.mkdir(parents=True, exist_ok=True)
            for k in range(n_per_class):
                image = np.broadcast_to(_COLOURS[label], (size, width or size + 8, 3)).copy()
                if noise:
                    image = np.clip(image.astype(int) + rng.integers(-60, 61, image.shape), 0, 255).astype(np.uint8)
                Image.fromarray(image).save(path / f"n0{label}{k:06d}_{1000 + k}.JPEG", format="JPEG", quality=95)
    return root


def write_in9l_tree(root: Path, n_per_class: int = 2, size: int = 40) -> Path:
    """IN-9L: `<root>/train/<class folder>/*` and `<root>/val/<class folder>/*`."""
    for split in ("train", "val"):
        for label, folder in enumerate(CLASS_FOLDERS):
            path = root / split / folder
            path.mkdir(parents=True, exist_ok=True)
            for k in range(n_per_class + (split == "train")):
                Image.fromarray(np.broadcast_to(_COLOURS[label], (size, size, 3)).copy()).save(
                    path / f"n{label:08d}_{k}.JPEG", format="JPEG", quality=95)
    return root


def write_mapping(path: Path) -> dict[str, int]:
    """A mapping shaped like in_to_in9.json: 370 of 1000 classes mapped, the published counts per class."""
    counts = (116, 52, 42, 36, 35, 27, 26, 20, 16)
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    mapping = {str(i): -1 for i in range(1000)}
    start = 0
    for cls, count in enumerate(counts):
        for i in order[start:start + count]:
            mapping[str(i)] = cls
        start += count
    path.write_text(json.dumps(mapping))
    return mapping


def write_tiny_models(root: Path) -> dict[str, dict]:
    """Tiny models of each family, saved with their libraries' own save calls; name -> load_classifier spec."""
    import open_clip
    import timm
    from safetensors.torch import save_file
    from timm.models import save_for_hf
    from transformers import (ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification, ViTConfig,
                              ViTForImageClassification, ViTImageProcessor)

    root = Path(root)
    torch.manual_seed(0)
    labels = {i: name for i, name in enumerate(("cardinal", "gull", "loon"))}
    # as microsoft/resnet-50: a ResNet with a ConvNext-style processor (resize shortest edge / crop_pct, crop)
    resnet = ResNetForImageClassification(ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=N_CLASSES,
        id2label=labels, label2id={v: k for k, v in labels.items()}))
    resnet.save_pretrained(root / "hf-resnet")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(root / "hf-resnet")
    # as google/vit-base-patch16-224
    vit = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=32, num_labels=N_CLASSES))
    vit.save_pretrained(root / "hf-vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "hf-vit")
    # timm: a hub-style folder (config.json + model.safetensors), and a bare checkpoint
    for arch in ("test_resnet", "test_vit"):
        model = timm.create_model(arch, pretrained=False, num_classes=N_CLASSES)
        save_for_hf(model, str(root / f"timm-{arch}"), safe_serialization=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / f"{arch}.safetensors"))
    # open_clip: a local-dir folder, as on the hub (open_clip_config.json + open_clip_model.safetensors)
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    clip = open_clip.CLIP(**cfg)
    (root / "clip").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(root / "clip" / "open_clip_model.safetensors"))
    (root / "clip" / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    return {
        "hf-resnet": {"family": "transformers", "model": str(root / "hf-resnet")},
        "hf-vit": {"family": "transformers", "model": str(root / "hf-vit")},
        "timm-resnet": {"family": "timm", "model": str(root / "timm-test_resnet"), "image_size": 64},
        "timm-vit": {"family": "timm", "model": str(root / "timm-test_vit")},
        "safetensors": {"family": "safetensors", "model": str(root / "test_resnet.safetensors"), "arch": "test_resnet",
                        "image_size": 64},
        "open_clip": {"family": "open_clip", "model": str(root / "clip"), "class_names": ["landbird", "waterbird"]},
    }
