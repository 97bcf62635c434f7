"""Subjects fine-tuned from a base network, and replicates that share no random stream."""
from __future__ import annotations

import json

import numpy as np

from fexbench.core.contract import Environment
from fexbench.data.imageset import ImageSet
from fexbench.models.subjects import BaseNet, TrainConfig, is_cached, load_or_train, subject_key
from fexbench.tasks.imagenet9_zoo import ImageNet9Zoo
from fexbench.tasks.waterbirds_zoo import WaterbirdsZoo


def _toy_set(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 8, 8, 3)).astype(np.uint8)
    images[labels == 1, :4] += 150
    return ImageSet(name="toy", images=images, labels=labels, class_names=("a", "b"), metadata={},
                    metadata_values={}, ids=tuple(str(i) for i in range(n)))


def test_fine_tuned_subject_starts_from_its_base_and_names_it(tmp_path):
    cfg = TrainConfig(n_classes=2, width=4, hidden=8, epochs=1, seed=3)
    base = BaseNet("base", TrainConfig(n_classes=2, width=4, hidden=8, epochs=1, seed=7), {"toy": "base"},
                   lambda: _toy_set(seed=5))
    tuned = load_or_train(tmp_path, "s", cfg, ("a", "b"), _toy_set, {"toy": 1}, progress=False, base=base)
    scratch = load_or_train(tmp_path, "s", cfg, ("a", "b"), _toy_set, {"toy": 1}, progress=False)
    assert tuned.weights_hash != scratch.weights_hash  # same config and data, another start
    assert subject_key(cfg, {"toy": 1}, base) != subject_key(cfg, {"toy": 1})
    assert is_cached(tmp_path, base.config, base.data_key, folder="bases")  # bases are no subjects
    assert len(list((tmp_path / "subjects").glob("*/model.safetensors"))) == 2
    card = json.loads((tmp_path / "subjects" / subject_key(cfg, {"toy": 1}, base) / "card.json").read_text())
    base_card = json.loads((tmp_path / "bases" / base.key / "card.json").read_text())
    assert card["init"] == {"base": base.key, "base_weights_sha256": base_card["weights_sha256"]}
    assert card["train_cpu_s"] >= 0 and tuned.config["init"]["base"] == base.key
    again = load_or_train(tmp_path, "s", cfg, ("a", "b"), lambda: 1 / 0, {"toy": 1}, progress=False, base=base)
    assert again.weights_hash == tuned.weights_hash  # read back, not retrained


def test_replicates_derive_every_initialisation_from_their_own_seed(tmp_path):
    envs = [Environment(cache_dir=tmp_path, progress=False).replicate(r) for r in (0, 1)]
    wb = WaterbirdsZoo(base_epochs=1)
    configs = [wb._spec(env, 0.9, 1)[0] for env in envs]
    assert configs[0].seed != configs[1].seed  # replicates share no slot's initialisation
    assert wb._spec(envs[0], 0.9, 1)[0].seed != wb._spec(envs[0], 0.9, 0)[0].seed
    assert wb._spec(envs[0], 0.9, 1)[0].seed != wb._spec(envs[0], 0.8, 1)[0].seed
    assert wb.base(envs[0]).config.seed != wb.base(envs[1]).config.seed
    assert wb.base(envs[0]).key != wb.base(envs[1]).key
    assert wb._spec(envs[0], 0.9, 1)[1]["slot_seed"] == 1
    assert WaterbirdsZoo(base_epochs=0).base(envs[0]) is None
    in9 = ImageNet9Zoo(base_epochs=1)
    assert in9._spec(envs[0], 0.5, 0, None)[1].seed != in9._spec(envs[1], 0.5, 0, None)[1].seed
    assert in9.base(envs[0]).key != in9.base(envs[1]).key
    assert in9.base(envs[0], 24).config.width == 24 and in9.base(envs[0], 24).key != in9.base(envs[0]).key


def test_zoo_subject_is_fine_tuned_from_the_replicate_base(tmp_path):
    env = Environment(cache_dir=tmp_path, progress=False)
    zoo = WaterbirdsZoo(n_train=40, n_probe=8, n_test=8, epochs=1, width=4, base_epochs=1)
    subject = zoo.subject(env, 0.9, 0)
    assert subject.config["init"]["base"] == zoo.base(env).key
    assert subject.config["data"]["slot_seed"] == 0
    assert is_cached(tmp_path, *zoo._spec(env, 0.9, 0)[:2], zoo.base(env))
