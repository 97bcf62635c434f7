"""Subjects: the config-keyed model cache, named layers through hooks, content-keyed activations."""
import numpy as np
import pytest
import torch

from fexbench.core.cache import ArrayCache
from fexbench.data.imageset import ImageSet
from fexbench.models.subjects import SmallCNN, TorchClassifier, TrainConfig, cached_activations, load_or_train, small_cnn_classifier


def _toy_set(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 16, 16, 3), dtype=np.uint8)
    images[labels == 1, :, :, 2] += 150  # class 1 is bluish: learnable in a few steps
    return ImageSet("toy", images, labels, ("a", "b"), {}, {}, tuple(map(str, range(n))))


def test_load_or_train_caches_by_config(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return _toy_set()

    cfg = TrainConfig(n_classes=2, width=4, hidden=8, epochs=2, seed=0)
    a = load_or_train(tmp_path, "s", cfg, ("a", "b"), make, {"toy": 1}, progress=False)
    b = load_or_train(tmp_path, "s", cfg, ("a", "b"), make, {"toy": 1}, progress=False)
    assert len(calls) == 1 and a.weights_hash == b.weights_hash
    assert a.config["train_data_sha256"] == _toy_set().content_hash
    x = torch.zeros(2, 3, 16, 16)
    assert torch.equal(a.model.module(x), b.model.module(x))  # loaded weights are the trained ones
    c = load_or_train(tmp_path, "s", TrainConfig(n_classes=2, width=4, hidden=8, epochs=3, seed=0), ("a", "b"),
                      make, {"toy": 1}, progress=False)
    d = load_or_train(tmp_path, "s", cfg, ("a", "b"), lambda: make() and _toy_set(seed=1), {"toy": 2}, progress=False)
    assert len(calls) == 3 and len({a.weights_hash, c.weights_hash, d.weights_hash}) == 3


def test_named_layers_pool_conv_maps_and_keep_gradients():
    torch.manual_seed(0)
    clf = small_cnn_classifier(SmallCNN(3, width=4, hidden=8))
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    acts = clf.activations(images, ("block3", "penultimate", "logits"))
    assert acts["block3"].shape == (5, 16) and acts["penultimate"].shape == (5, 8) and acts["logits"].shape == (5, 3)
    assert (acts["penultimate"] >= 0).all()  # post-ReLU
    direct = clf.module(clf.preprocess(images)).detach().numpy()
    assert np.allclose(acts["logits"], direct, atol=1e-5)
    x = clf.preprocess(images).requires_grad_(True)
    raw = clf.forward_layers(x, ("block3", "logits"))
    assert raw["block3"].ndim == 4
    raw["logits"][:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="no layer 'fc9'; layers are"):
        clf.activations(images, ("fc9",))
    with pytest.raises(KeyError, match="not a module"):
        TorchClassifier(SmallCNN(2), {"penultimate": "nope"}, clf.preprocess)


def test_activation_cache_is_keyed_by_weights_and_data_content(tmp_path):
    cache = ArrayCache(tmp_path)
    data = _toy_set()
    s1 = load_or_train(tmp_path, "s", TrainConfig(2, width=4, hidden=8, epochs=1, seed=0), ("a", "b"),
                       _toy_set, {"k": 1}, progress=False)
    s2 = load_or_train(tmp_path, "s", TrainConfig(2, width=4, hidden=8, epochs=1, seed=1), ("a", "b"),
                       _toy_set, {"k": 1}, progress=False)
    a1 = cached_activations(cache, s1, data)["logits"]
    a2 = cached_activations(cache, s2, data)["logits"]  # same subject name, other weights: no stale reuse
    assert not np.allclose(a1, a2)
    other = _toy_set(seed=1)
    assert not np.allclose(cached_activations(cache, s1, other)["logits"], a1)
    assert np.array_equal(cached_activations(cache, s1, data)["logits"], a1)
    assert len(list((tmp_path / "activations").glob("*.safetensors"))) == 3  # beside them: digests, locks
