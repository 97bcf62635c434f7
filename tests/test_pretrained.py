"""Pretrained subjects of every family, written locally the way each library saves them and loaded BY PATH
through the same call a hub name takes; their logits must equal the library's own model's."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from fexbench.harness.config import ConfigError
from fexbench.models.pretrained import ModelLoadError, SpecError, load_classifier, validate_spec

from fixture_writers import N_CLASSES, write_tiny_models




@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, dict]:
    return write_tiny_models(tmp_path_factory.mktemp("models"))


def images(n: int = 5, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference_logits(name: str, spec: dict, x: np.ndarray) -> np.ndarray:
    """The library's own model, loaded independently, on its own preprocessing of x."""
    from PIL import Image

    if spec["family"] == "transformers":
        from transformers import AutoImageProcessor, AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained(spec["model"]).eval()
        pixels = AutoImageProcessor.from_pretrained(spec["model"])(images=list(x), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return model(pixels).logits.numpy()
    if spec["family"] in ("timm", "safetensors"):
        import timm
        model = timm.create_model(f"local-dir:{spec['model']}", pretrained=True) if spec["family"] == "timm" else \
            timm.create_model(spec["arch"], pretrained=True, num_classes=N_CLASSES,
                              pretrained_cfg_overlay=dict(file=spec["model"], num_classes=N_CLASSES))
        model.eval()
        extra = {"input_size": (3, spec["image_size"], spec["image_size"])} if "image_size" in spec else {}
        transform = timm.data.create_transform(**timm.data.resolve_data_config(extra, model=model))
        with torch.no_grad():
            return model(torch.stack([transform(Image.fromarray(im)) for im in x])).numpy()
    import open_clip
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{spec['model']}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{spec['model']}")
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(torch.stack([transform(Image.fromarray(im)) for im in x])), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokenizer([f"a photo of a {c}." for c in spec["class_names"]])), dim=-1)
        return (model.logit_scale.exp() * img @ txt.T).numpy()


@pytest.mark.parametrize("name", ["hf-resnet", "hf-vit", "timm-resnet", "timm-vit", "safetensors", "open_clip"])
def test_each_family_loads_by_path_and_matches_the_library(tiny, name):
    spec = tiny[name]
    classifier, info = load_classifier(spec)
    x = images()
    acts = classifier.activations(x, ("penultimate", "logits"))
    n = len(spec.get("class_names", ())) or N_CLASSES
    assert acts["logits"].shape == (5, n) and acts["penultimate"].shape == (5, info["feature_dim"])
    assert info["n_classes"] == n and len(info["weights_sha256"]) == 64
    # the split at the head changes nothing: our logits are the library model's logits
    np.testing.assert_allclose(acts["logits"], reference_logits(name, spec, x), rtol=1e-4, atol=1e-4)
    # "penultimate" is exactly the head's input
    head = classifier.module.head
    np.testing.assert_allclose(acts["penultimate"] @ head.weight.detach().numpy().T
                               + (0 if head.bias is None else head.bias.detach().numpy()), acts["logits"],
                               rtol=1e-4, atol=1e-4)
    # gradients flow through the named layers (for gradient-based explainers)
    out = classifier.forward_layers(classifier.preprocess(x[:2]), ("penultimate", "logits"))
    grad, = torch.autograd.grad(out["logits"][:, 0].sum(), out["penultimate"])
    assert grad.shape == out["penultimate"].shape and torch.isfinite(grad).all()


def test_same_weights_give_the_same_hash_whatever_the_route(tiny):
    _, by_folder = load_classifier(tiny["timm-resnet"])
    _, by_file = load_classifier(tiny["safetensors"])
    _, other = load_classifier(tiny["timm-vit"])
    assert by_folder["weights_sha256"] == by_file["weights_sha256"] != other["weights_sha256"]


def test_class_names_come_from_the_model(tiny):
    assert load_classifier(tiny["hf-resnet"])[1]["class_names"] == ["cardinal", "gull", "loon"]
    assert load_classifier(tiny["hf-vit"])[1]["class_names"] is None  # LABEL_0, LABEL_1 ... are not names
    assert load_classifier(tiny["open_clip"])[1]["class_names"] == ["landbird", "waterbird"]


def test_conv_layer_found_for_cnns_only(tiny):
    resnet, info = load_classifier(tiny["hf-resnet"])
    assert info["conv_layer"] == "resnet.encoder.stages.1" and resnet.conv_layer == info["conv_layer"]
    maps = resnet.forward_layers(resnet.preprocess(images(2)), (info["conv_layer"],))[info["conv_layer"]]
    assert maps.ndim == 4 and maps.shape[2] * maps.shape[3] > 1
    assert load_classifier(tiny["timm-resnet"])[1]["conv_layer"] == "layer4"
    assert load_classifier(tiny["timm-vit"])[1]["conv_layer"] is None
    assert load_classifier(tiny["hf-vit"])[1]["conv_layer"] is None


def test_named_layer_is_resolved_and_pooled(tiny):
    classifier, info = load_classifier({**tiny["timm-resnet"], "layer": "layer2"})
    assert info["layer"] == "layer2" and "layer2" in classifier.layers
    raw = classifier.forward_layers(classifier.preprocess(images(3)), ("layer2",))["layer2"]
    pooled = classifier.activations(images(3), ("layer2",))["layer2"]
    np.testing.assert_allclose(pooled, raw.mean(dim=(2, 3)).detach().numpy(), rtol=1e-5, atol=1e-5)
    vit, _ = load_classifier({**tiny["hf-vit"], "layer": "vit.layers.1"})
    tokens = vit.forward_layers(vit.preprocess(images(3)), ("vit.layers.1",))["vit.layers.1"]
    assert tokens.ndim == 3  # (N, tokens, width): pooled over tokens to one number per unit
    np.testing.assert_allclose(vit.activations(images(3), ("vit.layers.1",))["vit.layers.1"],
                               tokens.mean(dim=1).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_unknown_layer_lists_the_available_ones(tiny):
    with pytest.raises(SpecError) as err:
        load_classifier({**tiny["timm-resnet"], "layer": "layer9"})
    message = str(err.value)
    assert "'layer9'" in message and "layer1" in message and "layer4" in message and err.value.key == "layer"


def test_open_clip_tower_without_class_names_is_headless(tiny):
    spec = {k: v for k, v in tiny["open_clip"].items() if k != "class_names"}
    classifier, info = load_classifier(spec)
    acts = classifier.activations(images(3))
    assert info["n_classes"] == 0
    np.testing.assert_allclose(acts["logits"], acts["penultimate"])
    np.testing.assert_allclose(np.linalg.norm(acts["penultimate"], axis=1), 1.0, rtol=1e-5)


def test_a_model_that_cannot_take_the_size_is_named(tiny):
    with pytest.raises(ModelLoadError, match="hf-vit.*48") as err:
        load_classifier({**tiny["hf-vit"], "image_size": 48})  # a ViT with a fixed input size
    assert "doesn't match" in str(err.value)
    _, info = load_classifier({**tiny["timm-vit"], "image_size": 48})  # timm's test_vit has a dynamic size
    assert info["input_size"] == 48


@pytest.mark.parametrize("spec, key, fragment", [
    ({"family": "keras", "model": "x"}, "family", "not a model family"),
    ({"family": "timm", "model": "resnet50", "colour": 1}, "colour", "unknown key"),
    ({"family": "timm"}, "model", "missing"),
    ({"family": "safetensors", "model": "x.safetensors"}, "arch", "required"),
    ({"family": "transformers", "model": "./no/such/folder"}, "model", "does not exist"),
    ({"family": "timm", "model": "resnet50", "pretrained": "openai"}, "pretrained", "open_clip"),
    ({"family": "open_clip", "model": "ViT-B-32", "prompt": "no slot"}, "prompt", "{}"),
    ({"family": "open_clip", "model": "ViT-B-32", "image_size": "big"}, "image_size", "integer"),
])
def test_bad_specs_name_the_key(spec, key, fragment):
    with pytest.raises(SpecError) as err:
        validate_spec(spec)
    assert err.value.key == key and fragment in str(err.value)


def test_hub_names_are_not_mistaken_for_paths():
    for model in ("microsoft/resnet-50", "google/vit-base-patch16-224"):
        assert validate_spec({"family": "transformers", "model": model})["model"] == model
    validate_spec({"family": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    validate_spec({"family": "timm", "model": "resnet50.a1_in1k"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_unavailable_cuda_is_a_clear_error(tiny):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_classifier(tiny["timm-resnet"], device="cuda")
