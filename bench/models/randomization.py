"""Model-parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

A copy of a trained subject whose named modules are re-initialised with their own initialisers
(`reset_parameters`, which also resets BatchNorm's running statistics). The cascade re-initialises
from the top (logits) down, each stage keeping the previous stages' random weights, so its last
stage is the fully randomised model. Each module's new weights come from a seed derived from
(seed, module name), so a module gets the same random weights in every stage that includes it.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Sequence

import torch
from torch import nn

from fexbench.core.seeds import derive_seed
from fexbench.core.contract import Subject
from fexbench.models.subjects import TorchClassifier

# SmallCNN's parameterised modules, top (output) first: the order of Adebayo's cascade.
SMALL_CNN_CASCADE = ("head", "hidden", "block3", "block2", "block1")


def state_hash(module: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): the weights' content identity."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\x00".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def reinitialise(module: nn.Module, names: Sequence[str], seed: int) -> nn.Module:
    """A deep copy of `module` with the named submodules re-initialised (everything under them)."""
    out = copy.deepcopy(module)
    modules = dict(out.named_modules())
    for name in names:
        if name not in modules:
            raise KeyError(f"no module {name!r} to randomise; modules are {sorted(m for m in modules if m)}")
        touched = False
        for sub_name, sub in modules[name].named_modules():
            if hasattr(sub, "reset_parameters"):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(seed, name, sub_name))
                    sub.reset_parameters()
                touched = True
            if hasattr(sub, "reset_running_stats"):
                sub.reset_running_stats()
        if not touched:
            raise ValueError(f"module {name!r} has no parameters to re-initialise")
    return out.eval()


def covers_all(module: nn.Module, names: Sequence[str]) -> bool:
    """Whether re-initialising `names` touches every parameter of `module` (a full randomisation)."""
    return all(any(p == n or p.startswith(n + ".") for n in names) for p, _ in module.named_parameters())


def cascade_stages(order: Sequence[str]) -> list[tuple[str, ...]]:
    """[(top,), (top, next), ..., all]: the modules randomised at each stage of the cascade."""
    return [tuple(order[:i + 1]) for i in range(len(order))]


def randomised_subject(subject: Subject, names: Sequence[str], seed: int, name: str) -> Subject:
    """The subject with `names` re-initialised; its weights hash is the new state's content hash."""
    model: TorchClassifier = subject.model
    module = reinitialise(model.module, names, seed)
    classifier = TorchClassifier(module, model.layer_paths, model.preprocess, model.conv_layer, model.device)
    config = {"randomised_from": subject.weights_hash, "randomised_modules": list(names), "seed": seed}
    return Subject(name=name, model=classifier, class_names=subject.class_names,
                   weights_hash=state_hash(module), config=config)
