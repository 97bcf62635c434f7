"""Grad-CAM (Selvaraju et al. 2017) of any scalar read off a subject's named layers, plus FALCON's crop.

Written out (a dozen lines) instead of taking the `grad-cam` package: that package wants a module
whose *output* is the target and pulls in OpenCV, while our subjects expose named layers through
`TorchClassifier.forward_layers`, which gives the conv maps and the target in one pass. The maps
are post-processed as pytorch-grad-cam does: ReLU, scale each map to [0, 1], bilinear upsampling
to the image size, scale again.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def _scale(cam: torch.Tensor) -> torch.Tensor:
    """Per map: subtract the minimum, divide by the maximum (+1e-7), as pytorch-grad-cam's scale_cam_image."""
    flat = cam.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (flat.max(dim=1, keepdim=True).values + 1e-7)
    return flat.view_as(cam)


def grad_cam(model, images: np.ndarray, target: Callable[[torch.Tensor], torch.Tensor] | np.ndarray, layer: str,
             conv_layer: str | None = None, batch_size: int = 128) -> np.ndarray:
    """(N, H, W) maps in [0, 1] for uint8 NHWC images.

    target maps the activations at `layer` (N, ...) to one scalar per image (N,), e.g. the sum of
    a feature group; or it is an (N, D) array of per-image weights on the layer's D features
    (conv maps mean-pooled), so one pass serves images of different feature groups. Its gradient
    w.r.t. the conv maps of `conv_layer` (default model.conv_layer), averaged over space, weights
    those maps. Images do not interact (the model is in eval mode), so batching changes nothing.
    """
    conv_layer = conv_layer or model.conv_layer
    if conv_layer is None:
        raise ValueError("Grad-CAM needs a convolutional layer; the subject declares none (conv_layer=None)")
    height, width = images.shape[1:3]
    maps = []
    for start in range(0, len(images), batch_size):
        x = model.preprocess(images[start:start + batch_size]).requires_grad_(True)  # a path to the maps
        with torch.enable_grad():
            acts = model.forward_layers(x, (conv_layer, layer))
            conv = acts[conv_layer]
            if conv.ndim != 4:
                raise ValueError(f"layer {conv_layer!r} gives shape {tuple(conv.shape)}, not conv maps (N, C, H, W)")
            if isinstance(target, np.ndarray):
                feats = acts[layer]
                feats = feats.mean(dim=(2, 3)) if feats.ndim == 4 else feats.flatten(1)
                w = torch.as_tensor(target[start:start + batch_size], dtype=feats.dtype)
                score = (feats * w).sum(dim=1)
            else:
                score = target(acts[layer])
            grads = torch.autograd.grad(score.sum(), conv)[0]
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = _scale(F.relu((weights * conv).sum(dim=1)).detach())
        cam = F.interpolate(cam[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        maps.append(_scale(F.relu(cam)).cpu().numpy())
    return np.concatenate(maps) if maps else np.zeros((0, height, width), np.float32)


def largest_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), end-exclusive: the largest-area bounding box of a connected region.

    FALCON keeps the biggest box around an island of the binarised CAM; an empty mask gives the
    whole image (nothing to crop to).
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    boxes = ndimage.find_objects(labels)
    areas = [(s[0].stop - s[0].start) * (s[1].stop - s[1].start) for s in boxes]
    best = boxes[int(np.argmax(areas))]
    return best[0].start, best[0].stop, best[1].start, best[1].stop


def cam_crops(images: np.ndarray, cams: np.ndarray, threshold: float = 0.6,
              size: int | None = None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Crop each image to the largest box of its CAM >= threshold and resize it (bicubic) to size x size."""
    from PIL import Image

    size = size or images.shape[1]
    crops, boxes = [], []
    for image, cam in zip(images, cams):
        top, bottom, left, right = largest_box(cam >= threshold)
        boxes.append((top, bottom, left, right))
        crop = Image.fromarray(image[top:bottom, left:right]).resize((size, size), Image.BICUBIC)
        crops.append(np.asarray(crop, dtype=np.uint8))
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), boxes
