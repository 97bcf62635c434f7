"""A hand-built subject with planted units, shared by the FALCON and CLIP-Dissect tests.

The subject is not trained: its penultimate unit k is the spatial max of a detector of colour k
(an RBF around the world's RGB value of that colour), so unit 0 fires exactly on red objects and
class 0's logit is unit 0. A unit planted this way must be explained with "red".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fexbench.core.contract import Context, Probe, Subject
from fexbench.data import world
from fexbench.data.world_concepts import world_vocabulary
from fexbench.models.subjects import TorchClassifier


class ColourDetectors(nn.Module):
    """Per pixel, unit k = relu(1 - |rgb - colour_k| / width): one map per world colour."""

    def __init__(self, width: float = 0.3):
        super().__init__()
        self.register_buffer("colours", torch.tensor(list(world.COLOURS.values()), dtype=torch.float32) / 255)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x[:, None] - self.colours[None, :, :, None, None]).pow(2).sum(dim=2).add(1e-8).sqrt()
        return torch.relu(1 - dist / self.width)


class SpatialMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class Planted(nn.Module):
    def __init__(self):
        super().__init__()
        self.detect, self.pool = ColourDetectors(), SpatialMax()
        self.head = nn.Linear(len(world.COLOURS), 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0, 0] = 1.0   # class 0 <- the red unit
            self.head.weight[1, 2] = 1.0   # class 1 <- the blue unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.detect(x)))


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def planted_case(clip, tmp_path: Path, n: int = 480, seed: int = 7):
    model = TorchClassifier(Planted(), {"conv": "detect", "penultimate": "pool", "logits": "logits"},
                            to_unit_range, conv_layer="conv")
    model.n_units = len(world.COLOURS)
    probe = world.imagenet9_set(n, seed, p_native=0.0)
    acts = model.activations(probe.images, ("penultimate", "logits"))
    subject = Subject("planted", model, ("red-ish", "blue-ish"), "planted-weights")
    context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                      vocabulary=tuple(world_vocabulary().words()), resources={"clip": clip},
                      cache_dir=tmp_path / "cache")
    return subject, context
