"""What an explainer usually needs, in one import: `from fexbench.explainers import helpers`.

Small and stable on purpose (docs/writing-an-explainer.md documents each): how strongly each
probe image expresses a target, a target's top images, and the shared models (the run's CLIP and
captioner), with the CLIP image embeddings of the probe cached in the explainer's own cache area.
An explainer that reads `clip()` or `captioner()` must declare it in `resource_names()`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fexbench.core.contract import Context, Target
from fexbench.explainers.baselines import target_scores
from fexbench.resources.clip import ClipModel, cached_image_embeddings

__all__ = ["target_scores", "top_images", "clip", "captioner", "probe_image_embeddings", "ClipModel"]


def top_images(target: Target, context: Context, k: int | float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The target's top-k probe images (k an int, or a fraction of the probe): their indices into
    the probe, highest score first (ties by index, so reproducible), and their scores."""
    scores = target_scores(target, context)
    n = len(scores)
    count = int(k) if isinstance(k, int) else int(round(float(k) * n))
    order = np.argsort(-scores, kind="stable")[:max(1, min(n, count))]
    return order, scores[order]


def clip(context: Context) -> ClipModel:
    """The run's shared CLIP (resource "clip"): encode_images(uint8 NHWC), encode_texts(list of str),
    L2-normalised float32. Declare "clip" in resource_names()."""
    return context.resources["clip"]


def captioner(context: Context) -> Any:
    """The run's shared captioner (resource "captioner"; fexbench.resources.captioner.Captioner:
    encode_images, sample(memory, seed), decode). Declare "captioner" in resource_names()."""
    return context.resources["captioner"]


def probe_image_embeddings(context: Context, model: ClipModel | None = None) -> np.ndarray:
    """CLIP embeddings (N, D) of the probe images, cached per (CLIP weights, images) under
    context.cache_dir, so every target and every seed reuses them."""
    return cached_image_embeddings(model or clip(context), context.probe.images, context.cache_dir)
