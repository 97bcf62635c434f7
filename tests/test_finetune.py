"""Real-data zoos: subsampling to a spurious strength, head / whole-network fine-tuning, the cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fexbench.harness.config import ConfigError
from fexbench.data.imageset import DataError, ImageSet
from fexbench.models.finetune import SubjectSpecError, finetune, load_or_finetune, subsample_to_rho, validate_subject
from fexbench.models.pretrained import load_classifier


def make_set(counts: dict[tuple[int, int], int], size: int = 32, seed: int = 0) -> ImageSet:
    """(y, place) -> count. Background colour = place (green land / blue water), centre block = class
    (warm landbird / white waterbird), with noise: the class is visible, as in Waterbirds."""
    rng = np.random.default_rng(seed)
    ys, places, imgs = [], [], []
    for (y, place), n in sorted(counts.items()):
        for _ in range(n):
            bg = np.array([40, 90, 200] if place else [60, 150, 50], float)
            fg = np.array([240, 240, 235] if y else [200, 60, 30], float)
            im = np.broadcast_to(bg, (size, size, 3)).copy()
            im[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = fg
            imgs.append(np.clip(im + rng.normal(0, 15, im.shape), 0, 255).astype(np.uint8))
            ys.append(y)
            places.append(place)
    order = rng.permutation(len(ys))
    return ImageSet("toy-train", np.stack(imgs)[order], np.array(ys)[order], ("landbird", "waterbird"),
                    {"place": np.array(places)[order]}, {"place": ("land", "water")},
                    tuple(f"img{i}" for i in order), provenance={"source": "test"})


def per_class_rho(data: ImageSet) -> list[float]:
    return [float((data.field("place")[data.labels == y] == y).mean()) for y in (0, 1)]


def test_subsample_hits_rho_in_every_class_and_keeps_the_most_images():
    data = make_set({(0, 0): 30, (0, 1): 10, (1, 0): 4, (1, 1): 20})
    sub = subsample_to_rho(data, 0.75, seed=0)
    assert per_class_rho(sub) == [0.75, 0.75]
    # landbirds: all 30 own + 10 other; waterbirds: 4 other limit 12 own
    assert np.bincount(sub.groups(), minlength=4).tolist() == [30, 10, 4, 12]
    assert set(sub.ids) <= set(data.ids) and sub.provenance["rho"] == "0.75"
    assert float(sub.provenance["rho_realised"]) == pytest.approx(0.75)
    assert sub.provenance["subsampled_from"] == data.content_hash

    balanced = subsample_to_rho(data, 0.5, seed=0)
    assert np.bincount(balanced.groups(), minlength=4).tolist() == [10, 10, 4, 4]
    assert np.bincount(subsample_to_rho(data, 1.0, seed=0).groups(), minlength=4).tolist() == [30, 0, 0, 20]
    assert np.bincount(subsample_to_rho(data, 0.0, seed=0).groups(), minlength=4).tolist() == [0, 10, 4, 0]


def test_subsample_is_reproducible_by_seed():
    data = make_set({(0, 0): 30, (0, 1): 10, (1, 0): 10, (1, 1): 30})
    a, b, c = (subsample_to_rho(data, 0.8, seed=s) for s in (1, 1, 2))
    assert a.ids == b.ids and a.content_hash == b.content_hash
    assert a.ids != c.ids and len(a) == len(c)


def test_subsample_refuses_what_the_data_cannot_give():
    data = make_set({(0, 0): 8, (0, 1): 8, (1, 0): 8, (1, 1): 8})
    with pytest.raises(DataError, match=r"rho=0\.99.*'landbird' has 8 images on its own place"):
        subsample_to_rho(data, 0.99, seed=0)
    no_conflict = make_set({(0, 0): 8, (1, 0): 3, (1, 1): 8})
    with pytest.raises(DataError, match="landbird"):
        subsample_to_rho(no_conflict, 0.5, seed=0)


@pytest.fixture(scope="module")
def backbone_spec(tmp_path_factory) -> dict:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    path = tmp_path_factory.mktemp("backbone") / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"family": "safetensors", "model": str(path), "arch": "test_resnet", "image_size": 32}


def accuracy(classifier, data: ImageSet) -> float:
    return float((classifier.activations(data.images)["logits"].argmax(1) == data.labels).mean())


def test_head_finetuning_is_a_linear_probe_on_the_frozen_backbone(backbone_spec):
    classifier, _ = load_classifier(backbone_spec)
    train = make_set({(0, 0): 24, (0, 1): 8, (1, 0): 8, (1, 1): 24})
    test = make_set({(0, 0): 10, (0, 1): 10, (1, 0): 10, (1, 1): 10}, seed=1)
    before = classifier.activations(test.images)
    tuned = finetune(classifier, train, mode="head", epochs=30, lr=1e-2, batch_size=16, seed=0, progress=False)
    after = tuned.activations(test.images)
    assert after["logits"].shape == (40, 2)
    np.testing.assert_allclose(after["penultimate"], before["penultimate"], rtol=1e-5, atol=1e-5)  # body frozen
    np.testing.assert_allclose(classifier.activations(test.images)["logits"], before["logits"])  # input untouched
    assert accuracy(tuned, test) >= 0.9  # the class block is linearly readable from the features
    again = finetune(classifier, train, mode="head", epochs=30, lr=1e-2, batch_size=16, seed=0, progress=False)
    np.testing.assert_allclose(again.activations(test.images)["logits"], after["logits"], rtol=1e-5, atol=1e-6)


def test_whole_network_finetuning_moves_the_backbone_only_in_the_copy(backbone_spec):
    classifier, _ = load_classifier(backbone_spec)
    train = make_set({(0, 0): 6, (0, 1): 2, (1, 0): 2, (1, 1): 6})
    original = {k: v.clone() for k, v in classifier.module.state_dict().items()}
    tuned = finetune(classifier, train, mode="all", epochs=1, lr=1e-2, batch_size=8, seed=0, progress=False)
    moved = [k for k, v in tuned.module.state_dict().items() if k.startswith("body.") and v.dtype.is_floating_point
             and not torch.equal(v, original[k])]
    assert moved, "whole-network fine-tuning left the backbone unchanged"
    assert all(torch.equal(v, original[k]) for k, v in classifier.module.state_dict().items())
    assert tuned.module.head.out_features == 2 and not tuned.module.training


def test_load_or_finetune_caches_by_content(backbone_spec, tmp_path):
    train = make_set({(0, 0): 24, (0, 1): 8, (1, 0): 8, (1, 1): 24})
    calls = []

    def make():
        calls.append(1)
        return train

    key = {"source": "test", "rho": 0.75}
    test = make_set({(0, 0): 5, (0, 1): 5, (1, 0): 5, (1, 1): 5}, seed=3)
    first = load_or_finetune(tmp_path, "probe", backbone_spec, key, make, mode="head", epochs=5, progress=False)
    second = load_or_finetune(tmp_path, "probe", backbone_spec, key, lambda: pytest.fail("trained again"),
                              mode="head", epochs=5, progress=False)
    assert calls == [1] and first.weights_hash == second.weights_hash
    assert first.class_names == ("landbird", "waterbird")
    np.testing.assert_allclose(first.model.activations(test.images)["logits"],
                               second.model.activations(test.images)["logits"], rtol=1e-6)
    card = first.config
    assert card["train_data_sha256"] == train.content_hash and card["data"] == key
    assert card["backbone_sha256"] == load_classifier(backbone_spec)[1]["weights_sha256"]

    other = load_or_finetune(tmp_path, "probe", backbone_spec, key, make, mode="head", epochs=5, lr=3e-3,
                             progress=False)
    assert calls == [1, 1] and other.weights_hash != first.weights_hash  # another config, another entry

    folder = Path(tmp_path) / "subjects" / card["config_key"]
    (folder / "trained.safetensors").write_bytes(b"torn")
    load_or_finetune(tmp_path, "probe", backbone_spec, key, make, mode="head", epochs=5, progress=False)
    assert calls == [1, 1, 1]  # a damaged entry is trained again, not trusted
    assert json.loads((folder / "card.json").read_text())["weights_sha256"] == first.weights_hash


def test_whole_network_subject_round_trips(backbone_spec, tmp_path):
    train = make_set({(0, 0): 6, (0, 1): 2, (1, 0): 2, (1, 1): 6})
    first = load_or_finetune(tmp_path, "all", backbone_spec, {"k": 1}, lambda: train, mode="all", epochs=1,
                             batch_size=8, progress=False)
    second = load_or_finetune(tmp_path, "all", backbone_spec, {"k": 1}, lambda: pytest.fail("trained again"),
                              mode="all", epochs=1, batch_size=8, progress=False)
    np.testing.assert_allclose(first.model.activations(train.images)["logits"],
                               second.model.activations(train.images)["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec, key", [
    ({"backbone": {"family": "timm", "model": "x"}, "mode": "partial"}, "mode"),
    ({"backbone": {"family": "timm", "model": "x"}, "rho": 1.5}, "rho"),
    ({"backbone": {"family": "timm", "model": "x"}, "epochs": 0}, "epochs"),
    ({"backbone": {"family": "timm", "model": "x"}, "rhos": [0.5, 0.9]}, "rhos"),
    ({"backbone": {"family": "timm", "model": "x"}, "seed": -1}, "seed"),
    ({"backbone": "resnet"}, "backbone"),
    ({"backbone": {"family": "timm", "model": "x"}, "optimiser": "sgd"}, "optimiser"),
])
def test_bad_subject_entries_name_the_key(spec, key):
    with pytest.raises(SubjectSpecError) as err:
        validate_subject(spec)
    assert err.value.key == key


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_finetune_on_missing_cuda_is_a_clear_error(backbone_spec):
    classifier, _ = load_classifier(backbone_spec)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        finetune(classifier, make_set({(0, 0): 2, (1, 1): 2}), device="cuda", progress=False)
