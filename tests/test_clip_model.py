"""The CLIP interface: word tokenizer, save/load by path through open_clip, preprocessing, resolution."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from fexbench.data import world
from fexbench.resources.clip import (EOS, PAD, UNK, ClipModel, EmbeddedClipConfig, WordTokenizer, _tensor_preprocess,
                              embedded_clip_id, load_clip, load_embedded_checkpoint, register_config, resolve_clip,
                              world_words)

TINY = EmbeddedClipConfig(vision_widths=(4, 8), embed_dim=16, text_width=16, text_heads=2, text_layers=1, seed=3)
TINY_RN = EmbeddedClipConfig(vision="modified_resnet", vision_width=8, embed_dim=16, text_width=16, text_heads=2,
                             text_layers=1, seed=3)


def _random_model(config: EmbeddedClipConfig, cache_dir, seed: int) -> torch.nn.Module:
    name = register_config(config, cache_dir)
    torch.manual_seed(seed)
    return open_clip.create_model(name)


def test_word_tokenizer_lemmatises_ends_and_pads():
    tok = WordTokenizer(["red", "tree", "on", "the"], context_length=6)
    ids = tok(["Red trees on the sea!", "tree"])
    assert ids.shape == (2, 6)
    red, tree, on, the = (tok.index[w] for w in ("red", "tree", "on", "the"))
    assert ids[0].tolist() == [red, tree, on, the, UNK, EOS]          # "trees" -> tree; "sea" unknown
    assert ids[1].tolist() == [tree, EOS, PAD, PAD, PAD, PAD]
    assert tok(["a b c d e f g h"]).tolist()[0][-1] == EOS             # truncated, still ended


def test_world_words_cover_every_caption():
    tok = WordTokenizer(world_words(), 24)
    scenes, _ = world.imagenet9_scenes(200, 5, p_native=0.0)
    ids = tok(list(world.captions(scenes, 5)))
    assert not (ids == UNK).any()


@pytest.mark.parametrize("config", [TINY, TINY_RN], ids=["world_cnn", "modified_resnet"])
def test_saved_model_loads_by_path_with_identical_embeddings(tmp_path, config):
    """The path a user's downloaded checkpoint takes: create_model_and_transforms(name, pretrained=file)."""
    model = _random_model(config, tmp_path, seed=0)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    original = ClipModel(model, open_clip.image_transform(config.image_size, is_train=False), config.tokenizer(),
                         "tiny", "in-memory")
    loaded = load_embedded_checkpoint(path, config, tmp_path)
    also = load_clip(config.model_name, str(path), tokenizer=config.tokenizer())  # the generic real path
    images = world.imagenet9_set(12, 1, p_native=0.0).images
    texts = ["a red disk on the sea", "lava", "a guitar"]
    for clip in (loaded, also):
        assert np.array_equal(clip.encode_images(images), original.encode_images(images))
        assert np.array_equal(clip.encode_texts(texts), original.encode_texts(texts))
    assert loaded.weights_hash == also.weights_hash and len(loaded.weights_hash) == 64
    other = ClipModel(_random_model(config, tmp_path, seed=1), original.preprocess_pil, config.tokenizer(), "o", "o")
    assert not np.allclose(other.encode_images(images), original.encode_images(images))
    emb = loaded.encode_images(images)
    assert emb.shape == (12, config.embed_dim) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_missing_checkpoint_is_named(tmp_path):
    register_config(TINY, tmp_path)
    with pytest.raises((FileNotFoundError, RuntimeError), match="nope"):
        load_clip(TINY.model_name, str(tmp_path / "nope.safetensors"))


def test_open_clip_preprocess_equals_the_training_fast_path(tmp_path):
    """Training skips PIL; the model's own transform must give the same tensor on world images."""
    clip = ClipModel(_random_model(TINY, tmp_path, 0), open_clip.image_transform(32, is_train=False),
                     TINY.tokenizer(), "t", "t")
    images = world.imagenet9_set(5, 2, p_native=0.0).images
    fast = _tensor_preprocess(images, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    assert torch.allclose(clip.preprocess(images), fast, atol=1e-5)
    bigger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # real images may be larger: resized
    assert clip.preprocess(bigger).shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        clip.encode_images(images.astype(np.float32))


def test_config_key_tracks_every_field():
    assert EmbeddedClipConfig().key == EmbeddedClipConfig().key
    assert EmbeddedClipConfig(epochs=3).key != EmbeddedClipConfig().key
    assert embedded_clip_id().endswith(EmbeddedClipConfig().key)


def test_resolve_clip_refuses_a_different_embedded_model():
    class Ctx:
        resources = {"clip": type("C", (), {"card": {"config_key": "other"}})()}

    assert resolve_clip("resource", None, Ctx()) is Ctx.resources["clip"]
    with pytest.raises(ValueError, match="other"):
        resolve_clip(embedded_clip_id(), None, Ctx())


def test_attribute_positives_and_the_multi_positive_loss():
    """A caption's positives are the images showing everything it names; with one positive per row
    the loss is CLIP's own cross-entropy."""
    import torch

    from fexbench.resources.clip import _clip_loss, positives

    # (shape, colour, background) of three images; caption 0 names all three, 1 the shape, 2 the place
    attributes = np.array([[8, 0, 4], [8, 1, 2], [3, 0, 4]])
    names = np.array([[True, True, True], [True, False, False], [False, False, True]])
    expected = np.array([[1, 0, 0],    # "a red heart on sand": image 0 only
                         [1, 1, 0],    # "a heart": both hearts
                         [1, 0, 1]])   # "sand": both sand images
    assert (positives(attributes, names).numpy() == expected.astype(bool)).all()

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)  # 3 captions + 2 distractors
    scale = torch.tensor(10.0)
    clip_own = (torch.nn.functional.cross_entropy(scale * img @ txt.T, torch.arange(3))
                + torch.nn.functional.cross_entropy(scale * txt[:3] @ img.T, torch.arange(3))) / 2
    assert torch.allclose(_clip_loss(img, txt, scale), clip_own)
    # spreading the targets over positives changes the loss
    assert not torch.allclose(_clip_loss(img, txt, scale, positives(attributes, names)), clip_own)
