"""Pretrained image classifiers (transformers, timm, open_clip, a local safetensors checkpoint) as subjects.

Every family is loaded through the call its library documents for a hub name, so a local copy
takes the same code path as a download: `AutoModelForImageClassification.from_pretrained(name or
folder)`, `timm.create_model(name | "local-dir:folder", pretrained=True)` (or, for a bare
checkpoint, `pretrained_cfg_overlay=dict(file=...)`), `open_clip.create_model_and_transforms(name |
"local-dir:folder", pretrained=tag or file)`.

The loaded network is split at its classification head into `HeadedClassifier(body, head)`:
body -> pooled features -> an identity tap `features` -> linear head -> logits. The tap makes the
head's input (fexbench's "penultimate" layer) a module output, whatever the architecture does in
its forward (a ViT slices its CLS token functionally), and it lets fexbench.models.finetune swap the head.
The preprocessing is the model's own (the transformers image processor, the timm data config's
eval transform, open_clip's validation transform) applied to our uint8 NHWC arrays.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from fexbench.core.references import ConfigError, check_device, local_path, looks_local
from fexbench.data.imageset import DataError
from fexbench.models.subjects import TorchClassifier

FAMILIES = ("transformers", "timm", "open_clip", "safetensors")
SPEC_KEYS = ("family", "model", "pretrained", "arch", "layer", "image_size", "class_names", "prompt")
DEFAULT_PROMPT = "a photo of a {}."


class SpecError(DataError):
    """A bad model spec; `key` is the spec key at fault (fexbench.harness.config prefixes the config's key)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key, self.reason = key, reason


class ModelLoadError(DataError):
    """The library could not load a model (a missing file, an unknown name, no network for a hub name)."""


def validate_spec(spec: Mapping[str, Any], check_paths: bool = True) -> dict[str, Any]:
    """A checked copy of a model spec; SpecError names the key at fault."""
    if not isinstance(spec, Mapping):
        raise SpecError("", f"a model spec must be a table, got {type(spec).__name__}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(unknown[0], f"unknown key; model spec keys are {', '.join(SPEC_KEYS)}")
    for key in ("family", "model"):
        if key not in spec:
            raise SpecError(key, "required key is missing")
    spec = dict(spec)
    family = spec["family"]
    if family not in FAMILIES:
        raise SpecError("family", f"{family!r} is not a model family; families are {', '.join(FAMILIES)}")
    for key in ("model", "pretrained", "arch", "layer", "prompt"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key]):
            raise SpecError(key, f"expected a non-empty string, got {spec[key]!r}")
    if "image_size" in spec and (isinstance(spec["image_size"], bool) or not isinstance(spec["image_size"], int)
                                 or spec["image_size"] < 8):
        raise SpecError("image_size", f"expected an integer >= 8, got {spec['image_size']!r}")
    if "class_names" in spec:
        names = spec["class_names"]
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
            raise SpecError("class_names", f"expected a non-empty list of names, got {names!r}")
        spec["class_names"] = tuple(names)
    for key, families in (("pretrained", ("open_clip",)), ("class_names", ("open_clip",)), ("prompt", ("open_clip",)),
                          ("arch", ("timm", "safetensors"))):
        if key in spec and family not in families:
            raise SpecError(key, f"only used by the {' and '.join(families)} famil{'ies' if len(families) > 1 else 'y'}")
    if "prompt" in spec and "{}" not in spec["prompt"]:
        raise SpecError("prompt", f"must contain {{}} where the class name goes, got {spec['prompt']!r}")
    model = spec["model"]
    if family == "safetensors":
        if "arch" not in spec:
            raise SpecError("arch", "required for a safetensors checkpoint: the timm architecture name, e.g. resnet50")
        if check_paths and not local_path(model).is_file():
            raise SpecError("model", f"checkpoint file does not exist: {local_path(model).absolute()}")
    elif check_paths and looks_local(model) and not local_path(model).exists():
        raise SpecError("model", f"path does not exist: {local_path(model).absolute()}")
    if family == "timm" and looks_local(model) and local_path(model).is_file() and "arch" not in spec:
        raise SpecError("arch", "required when model is a checkpoint file: the timm architecture name")
    pretrained = spec.get("pretrained")
    if check_paths and pretrained and looks_local(pretrained) and not local_path(pretrained).is_file():
        raise SpecError("pretrained", f"checkpoint file does not exist: {local_path(pretrained).absolute()}")
    return spec


class HeadedClassifier(nn.Module):
    """body -> pooled features -> `features` (identity tap, "penultimate") -> `head` -> logits.

    A headless backbone (an open_clip tower without class names, a checkpoint without a
    classifier) has an identity head: its logits are its features until fexbench.models.finetune fits one.
    open_clip towers are L2-normalised, as CLIP's zero-shot classifier needs.
    """

    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int, normalize: bool = False):
        super().__init__()
        self.body, self.features, self.head = body, nn.Identity(), head
        self.feature_dim, self.normalize = int(feature_dim), bool(normalize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        z = getattr(z, "logits", z)  # transformers: the output object; its classifier is now a flatten
        if isinstance(z, (tuple, list)):
            z = z[0]
        if z.ndim > 2:
            if z.shape[2:].numel() != 1:
                raise RuntimeError(f"the body returned {tuple(z.shape)}, not pooled features")
            z = z.flatten(1)
        if self.normalize:
            z = nn.functional.normalize(z, dim=-1)
        return self.head(self.features(z))

    @property
    def n_classes(self) -> int:
        return self.head.out_features if isinstance(self.head, nn.Linear) else 0


def amp_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16


class PretrainedClassifier(TorchClassifier):
    """A TorchClassifier that runs under autocast on cuda (mixed precision) and batches by its own size.

    Autocast keeps reductions and normalisations in fp32 and is safe for inference and for the
    gradients of Grad-CAM-like explainers; set `amp = False` on the instance for exact fp32.
    On CPU nothing changes (no bf16 there).
    """

    def __init__(self, module: nn.Module, layers: dict[str, str], preprocess: Callable[[np.ndarray], torch.Tensor],
                 conv_layer: str | None = None, device: str = "cpu", amp: bool = True, batch_size: int = 64):
        super().__init__(module, layers, preprocess, conv_layer=conv_layer, device=device)
        self.amp, self.batch_size = amp, batch_size

    @property
    def autocast(self) -> bool:
        return self.amp and str(self.device).startswith("cuda")

    def forward_layers(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if self.autocast:
            with torch.autocast("cuda", dtype=amp_dtype()):
                return super().forward_layers(x, layers)
        return super().forward_layers(x, layers)

    def activations(self, images: np.ndarray, layers: tuple[str, ...] = ("penultimate", "logits"),
                    batch_size: int | None = None, progress: bool = False) -> dict[str, np.ndarray]:
        """TorchClassifier.activations, batched by this model's own batch size unless told otherwise."""
        return super().activations(images, layers, batch_size or self.batch_size, progress)

    def with_module(self, module: nn.Module) -> "PretrainedClassifier":
        """The same layers, preprocessing and device around another module (a fine-tuned copy)."""
        return PretrainedClassifier(module, dict(self.layer_paths), self.preprocess, self.conv_layer,
                                    self.device, self.amp, self.batch_size)


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over the state dict (sorted names, dtypes, shapes, bytes): names weights in cache keys."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_classifier(spec: Mapping[str, Any], device: str = "cpu", amp: bool = True,
                    batch_size: int = 64) -> tuple[PretrainedClassifier, dict[str, Any]]:
    """Load the spec'd model as a classifier with layers "penultimate", "logits" (+ the spec's layer).

    Returns (classifier, info): info holds family, model, weights_sha256 (over the state dict),
    n_classes, class_names (from id2label / ImageNet info, else None), input_size, feature_dim,
    conv_layer (the last spatial map of a CNN, for Grad-CAM-like explainers; None for a ViT),
    layer (the fexbench layer name to explain) and layers.
    """
    spec = validate_spec(spec)
    device = check_device(device)
    family = spec["family"]
    loaders = {"transformers": _load_transformers, "timm": _load_timm, "safetensors": _load_timm,
               "open_clip": _load_open_clip}
    try:
        body, head, preprocess, meta = loaders[family](spec)
    except (SpecError, ModelLoadError, ConfigError):
        raise
    except Exception as err:  # the libraries raise many kinds; name the model either way
        raise ModelLoadError(f"cannot load {family} model {spec['model']!r}: {type(err).__name__}: {err}") from err
    module = HeadedClassifier(body, head, meta["feature_dim"], normalize=meta.get("normalize", False)).eval()
    trace, input_size = _trace(module, preprocess, spec)
    conv = _conv_layer(trace)
    layers = {"penultimate": "features", "logits": "logits"}
    if conv:
        layers[conv] = f"body.{conv}"
    layer = spec.get("layer", "penultimate")
    if layer not in layers:
        layers[layer] = _resolve_layer(module, layer, spec["model"])
    info = {"family": family, "model": spec["model"], "spec": dict(spec), "weights_sha256": state_dict_sha256(module),
            "n_classes": module.n_classes, "class_names": meta.get("class_names"), "input_size": input_size,
            "feature_dim": module.feature_dim, "conv_layer": conv, "layer": layer, "layers": dict(layers)}
    classifier = PretrainedClassifier(module, layers, preprocess, conv_layer=conv, device=device, amp=amp,
                                      batch_size=batch_size)
    return classifier, info


# -- families -------------------------------------------------------------------------------------------
def _load_transformers(spec: dict) -> tuple[nn.Module, nn.Module, Callable, dict]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    source = str(local_path(spec["model"])) if looks_local(spec["model"]) else spec["model"]
    model = AutoModelForImageClassification.from_pretrained(source)
    overrides = {}
    try:
        processor = AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"transformers model {spec['model']!r} has no image processor config "
                             f"(preprocessor_config.json), so its preprocessing is unknown: {err}") from None
    if "image_size" in spec:
        s = spec["image_size"]
        size = processor.size
        keys = size.keys() if isinstance(size, Mapping) else [k for k in ("height", "width", "shortest_edge")
                                                               if getattr(size, k, None)]
        overrides["size"] = {"shortest_edge": s} if "shortest_edge" in keys else {"height": s, "width": s}
        if getattr(processor, "crop_size", None):
            overrides["crop_size"] = {"height": s, "width": s}
        processor = AutoImageProcessor.from_pretrained(source, **overrides)
    path, head = _hf_head(model)
    if isinstance(head, nn.Sequential):
        linear, replacement = head[-1], nn.Sequential(*list(head)[:-1])
    else:
        linear, replacement = head, nn.Identity()
    model.set_submodule(path, replacement)
    labels = getattr(model.config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), ""))) for i in range(linear.out_features)]
    if not all(names) or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        names = None

    def preprocess(images: np.ndarray) -> torch.Tensor:
        return processor(images=list(images), input_data_format="channels_last", return_tensors="pt")["pixel_values"]

    return model, linear, preprocess, {"feature_dim": linear.in_features, "class_names": names}


def _hf_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classification head: a Linear, or a Sequential (flatten, dropout ...) ending in one."""
    n = getattr(model.config, "num_labels", None)

    def is_head(m: Any) -> bool:
        last = m[-1] if isinstance(m, nn.Sequential) and len(m) else m
        return isinstance(last, nn.Linear) and (n is None or last.out_features == n)

    for name in ("classifier", "head", "fc"):
        if is_head(getattr(model, name, None)):
            return name, getattr(model, name)
    linears = [(name, m) for name, m in model.named_modules() if is_head(m) and isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    raise ModelLoadError(f"{type(model).__name__}: no linear classification head with {n} outputs found "
                         "(models with two heads, e.g. distilled DeiT, are not supported)")


def _load_timm(spec: dict) -> tuple[nn.Module, nn.Module, Callable, dict]:
    import timm

    name = spec["model"]
    path = local_path(name)
    if name.startswith(("hf-hub:", "local-dir:")):
        model = timm.create_model(name, pretrained=True)
    elif looks_local(name) and path.is_dir():
        model = timm.create_model(f"local-dir:{path}", pretrained=True)
    elif looks_local(name) and path.is_file():
        arch = spec["arch"]
        n = _checkpoint_classes(arch, path)
        model = timm.create_model(arch, pretrained=True, num_classes=n,
                                  pretrained_cfg_overlay=dict(file=str(path), num_classes=n))
    else:
        model = timm.create_model(name, pretrained=True)
    head = model.get_classifier()
    if isinstance(head, nn.Linear):
        model.reset_classifier(0)
    elif getattr(model, "num_classes", 0) == 0:
        head = nn.Identity()
    else:
        raise ModelLoadError(f"timm model {name!r}: its classifier is a {type(head).__name__}, not a linear layer")
    data_config = timm.data.resolve_data_config({"input_size": (3, spec["image_size"], spec["image_size"])}
                                                if "image_size" in spec else {}, model=model)
    transform = timm.data.create_transform(**data_config)
    names = None
    if isinstance(head, nn.Linear) and head.out_features == 1000:
        try:
            subset = timm.data.infer_imagenet_subset(model)
            names = list(timm.data.ImageNetInfo(subset).label_descriptions()) if subset else None
        except Exception:  # class names are a nicety
            names = None
    return model, head, _pil_preprocess(transform), {"feature_dim": model.num_features, "class_names": names}


def _checkpoint_classes(arch: str, path: Path) -> int:
    """Number of classes of a timm checkpoint: the rows of its classifier weight (0 if it has none)."""
    import timm
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        raise ModelLoadError(f"{path}: only .safetensors checkpoints are read (no pickles)")
    if not timm.is_model(arch):
        raise SpecError("arch", f"{arch!r} is not a timm architecture (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(arch)
    classifier = cfg.classifier if cfg is not None else None
    classifier = classifier[0] if isinstance(classifier, (tuple, list)) else classifier
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        if classifier and f"{classifier}.weight" in keys:
            return int(f.get_slice(f"{classifier}.weight").get_shape()[0])
    return 0


def _load_open_clip(spec: dict) -> tuple[nn.Module, nn.Module, Callable, dict]:
    import open_clip

    name = spec["model"]
    if not name.startswith(("hf-hub:", "local-dir:")) and looks_local(name) and local_path(name).is_dir():
        name = f"local-dir:{local_path(name)}"
    pretrained = spec.get("pretrained")
    if pretrained and looks_local(pretrained):
        pretrained = str(local_path(pretrained))
    kwargs = {"force_image_size": spec["image_size"]} if "image_size" in spec else {}
    model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    model.eval()
    visual = model.visual
    with torch.no_grad():
        size = _transform_size(transform)
        dim = int(visual(torch.zeros(1, 3, size, size)).shape[-1])
    head: nn.Module = nn.Identity()
    names = spec.get("class_names")
    if names:
        tokenizer = open_clip.get_tokenizer(name)
        prompt = spec.get("prompt", DEFAULT_PROMPT)
        with torch.no_grad():
            text = nn.functional.normalize(model.encode_text(tokenizer([prompt.format(c) for c in names])), dim=-1)
            head = nn.Linear(dim, len(names), bias=False)
            head.weight.copy_(model.logit_scale.exp() * text)
        names = list(names)
    del model  # the text tower is not needed once the zero-shot head is built
    return visual, head, _pil_preprocess(transform), {"feature_dim": dim, "class_names": names, "normalize": True}


def _transform_size(transform: Callable) -> int:
    from PIL import Image
    return int(transform(Image.new("RGB", (64, 64))).shape[-1])


def _pil_preprocess(transform: Callable) -> Callable[[np.ndarray], torch.Tensor]:
    """The library's own eval transform (PIL in, tensor out), image by image, stacked."""
    from PIL import Image

    def preprocess(images: np.ndarray) -> torch.Tensor:
        return torch.stack([transform(Image.fromarray(np.ascontiguousarray(im))) for im in images])

    return preprocess


# -- layers -----------------------------------------------------------------------------------------------
def _trace(module: HeadedClassifier, preprocess: Callable, spec: dict) -> tuple[list[tuple[str, tuple]], int]:
    """One forward pass on a blank image: (module path, output shape) in the order modules finish,
    and the input size the preprocessing produces. Also checks the model runs at all."""
    x = preprocess(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    order: list[tuple[str, tuple]] = []
    hooks = []
    for name, m in module.body.named_modules():
        def hook(_m, _i, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) and out else out
            if isinstance(out, torch.Tensor):
                order.append((name, tuple(out.shape)))
        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = module(x)
    except Exception as err:
        raise ModelLoadError(f"{spec['family']} model {spec['model']!r} fails on a {tuple(x.shape)} input "
                             f"(image_size {spec.get('image_size', 'default')}): {type(err).__name__}: {err}") from err
    finally:
        for h in hooks:
            h.remove()
    if logits.ndim != 2:
        raise ModelLoadError(f"{spec['model']!r}: logits of shape {tuple(logits.shape)}, expected (N, classes)")
    return order, int(x.shape[-1])


def _conv_layer(trace: list[tuple[str, tuple]]) -> str | None:
    """The last module with a spatial (N, C, H, W) output, if nothing token-shaped runs after it (a CNN)."""
    last = None
    for i, (name, shape) in enumerate(trace):
        if name and len(shape) == 4 and shape[2] * shape[3] > 1:
            last = i
    if last is None or any(len(shape) == 3 for _, shape in trace[last + 1:]):
        return None
    return trace[last][0]


def _resolve_layer(module: HeadedClassifier, layer: str, model: str) -> str:
    modules = dict(module.named_modules())
    for path in (f"body.{layer}", layer):
        if path in modules and path:
            return path
    available = [name for name, _ in module.body.named_modules() if name]
    raise SpecError("layer", f"no layer {layer!r} in {model!r}; use penultimate, logits or a module path: "
                             f"{', '.join(available)}")


