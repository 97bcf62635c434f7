"""imagenet9-background: the challenge's protocol on hand-built predictions, the real layout on a
fixture tree written exactly as the release lays it out, the 1000->9 mapping, and the task end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fexbench.data import world
from fexbench.core.contract import Case, Context, Explanation, Prepared, Probe, Subject, Target
from fexbench.data.imageset import DataError
from fexbench.data.imagenet9_challenge import (CLASS_FOLDERS, CLASS_NAMES, challenge_accuracies, load_challenge_variant,
                                       load_in9l, load_in_to_in9, map_in1000_to_in9)
from fexbench.core.contract import Environment
from fexbench.harness.driver import run
from fexbench.tasks.imagenet9 import NATIVE_BACKGROUND, ImageNet9Background
from conftest import run_baselines
from fixture_writers import _COLOURS, write_challenge_tree, write_in9l_tree, write_mapping







# ---------------------------------------------------------------- the protocol

def test_bg_gap_and_per_variant_accuracy_on_a_hand_built_confusion():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    preds = {
        "original": np.array([0, 0, 0, 0, 1, 1, 1, 1]),      # 8/8
        "mixed_same": np.array([0, 0, 0, 1, 1, 1, 1, 1]),    # 7/8: class 0 3/4, class 1 4/4
        "mixed_rand": np.array([0, 1, 1, 1, 1, 0, -1, 1]),   # 3/8: class 0 1/4, class 1 2/4 (-1 is wrong)
        "only_bg_t": np.array([1, 1, 1, 1, 1, 1, 1, 1]),     # 4/8: class 0 0/4, class 1 4/4
    }
    out = challenge_accuracies(preds, {v: labels for v in preds}, n_classes=3)
    assert out["accuracy"] == {"original": 1.0, "mixed_same": 7 / 8, "mixed_rand": 3 / 8, "only_bg_t": 0.5}
    assert out["bg_gap"] == pytest.approx(7 / 8 - 3 / 8)
    assert out["per_class_accuracy"]["mixed_same"][:2] == [0.75, 1.0]
    assert out["per_class_accuracy"]["mixed_rand"][:2] == [0.25, 0.5]
    assert np.isnan(out["per_class_accuracy"]["original"][2])  # class 2 has no image
    assert out["per_class_bg_gap"][:2] == pytest.approx([0.5, 0.5])
    assert out["per_class_accuracy"]["only_bg_t"][:2] == [0.0, 1.0]


def test_protocol_rejects_mismatched_inputs():
    with pytest.raises(DataError, match="no labels"):
        challenge_accuracies({"original": np.zeros(2)}, {})
    with pytest.raises(DataError, match="predictions"):
        challenge_accuracies({"original": np.zeros(3)}, {"original": np.zeros(2)})


# ---------------------------------------------------------------- the real layout

def test_challenge_tree_loads_with_the_right_classes(tmp_path):
    root = write_challenge_tree(tmp_path / "bg_challenge")
    data = load_challenge_variant(root, "mixed_rand", image_size=16)
    assert data.class_names == ("dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect",
                                "musical instrument", "primate", "fish")
    assert len(data) == 18 and data.images.shape == (18, 16, 16, 3)
    assert np.array_equal(np.bincount(data.labels), np.full(9, 2))
    for label, image, image_id in zip(data.labels, data.images, data.ids):
        assert image_id.startswith(f"mixed_rand/val/{CLASS_FOLDERS[label]}/")
        assert np.abs(image.reshape(-1, 3).mean(0) - _COLOURS[label]).max() < 12  # pixels follow the folder
    assert "02_wheeled vehicle" in " ".join(data.ids) and "06_musical instrument" in " ".join(data.ids)
    assert data.provenance["variant"] == "mixed_rand" and len(data.provenance["file_manifest_sha256"]) == 64
    original = load_challenge_variant(root, "original", image_size=16)
    # mixed variants reuse the original file names: ids differ by the variant prefix only
    assert [i.split("/", 1)[1] for i in original.ids] == [i.split("/", 1)[1] for i in data.ids]
    limited = load_challenge_variant(root, "original", image_size=16, limit=9)
    assert len(limited) == 9 and len(set(limited.labels)) == 9  # spread over the classes


def test_in9l_training_layout_loads(tmp_path):
    root = write_in9l_tree(tmp_path / "in9l")
    train, val = load_in9l(root, "train", image_size=8), load_in9l(root, "val", image_size=8)
    assert len(train) == 27 and len(val) == 18 and train.class_names == CLASS_NAMES
    assert all(i.startswith(f"train/{CLASS_FOLDERS[y]}/") for i, y in zip(train.ids, train.labels))
    with pytest.raises(DataError, match="split"):
        load_in9l(root, "test")


def test_clear_errors_for_a_broken_tree(tmp_path):
    root = write_challenge_tree(tmp_path / "bg", variants=("original",))
    with pytest.raises(DataError, match=r"mixed_same.*not found"):
        load_challenge_variant(root, "mixed_same")
    with pytest.raises(DataError, match="unknown backgrounds-challenge variant"):
        load_challenge_variant(root, "mixed-rand")
    (root / "original" / "val" / "09_plant").mkdir()
    with pytest.raises(DataError, match="unknown class folder.*09_plant"):
        load_challenge_variant(root, "original")
    (root / "original" / "val" / "09_plant").rmdir()
    bad = root / "original" / "val" / "03_reptile" / "n0broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="n0broken.JPEG"):
        load_challenge_variant(root, "original", image_size=8)
    bad.unlink()
    for f in (root / "original" / "val" / "08_fish").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="08_fish.*no images"):
        load_challenge_variant(root, "original")


# ---------------------------------------------------------------- 1000 -> 9



def test_1000_class_predictions_map_through_in_to_in9(tmp_path):
    raw = write_mapping(tmp_path / "in_to_in9.json")
    mapping = load_in_to_in9(tmp_path / "in_to_in9.json")
    assert mapping.shape == (1000,) and (mapping >= 0).sum() == 370
    dog = int(next(k for k, v in raw.items() if v == 0))
    fish = int(next(k for k, v in raw.items() if v == 8))
    unmapped = int(next(k for k, v in raw.items() if v == -1))
    logits = np.zeros((3, 1000), np.float32)
    logits[0, dog], logits[1, fish], logits[2, unmapped] = 5.0, 5.0, 5.0
    logits[2, dog] = 4.0  # a mapped class close behind does not rescue an unmapped argmax
    pred = map_in1000_to_in9(logits, mapping)
    assert pred.tolist() == [0, 8, -1]
    assert map_in1000_to_in9(np.array([dog, fish, unmapped]), mapping).tolist() == [0, 8, -1]
    acc = challenge_accuracies({"original": pred}, {"original": np.array([0, 8, 0])})
    assert acc["accuracy"]["original"] == pytest.approx(2 / 3)  # the unmapped argmax counts as wrong


def test_bad_mappings_are_named(tmp_path):
    raw = write_mapping(tmp_path / "m.json")
    raw["17"] = 9
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"'17' maps to 9"):
        load_in_to_in9(tmp_path / "m.json")
    del raw["17"]
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="missing"):
        load_in_to_in9(tmp_path / "m.json")
    with pytest.raises(DataError, match="not found"):
        load_in_to_in9(tmp_path / "absent.json")
    with pytest.raises(DataError, match=r"\(N, 1000\)"):
        map_in1000_to_in9(np.zeros((2, 9)), np.zeros(1000, np.int64))


# ---------------------------------------------------------------- scoring

def _prepared(gaps: dict[str, list[float]]) -> Prepared:
    probe = Probe(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 1)), np.zeros((1, 9)), "penultimate", ("a",))
    cases = tuple(Case(Subject(n, None, world.SHAPES, n), Context(probe, ()), ()) for n in gaps)
    truth = {n: {"per_class_bg_gap": g, "bg_gap": float(np.mean(g))} for n, g in gaps.items()}
    return Prepared(cases, truth, {})


def test_scoring_reads_native_backgrounds_and_splits_shared_words():
    task = ImageNet9Background(n_bootstrap=100)
    gaps = {"biased": [0.8] * 9, "clean": [0.0] * 9}
    targets = [Target("class", c, world.SHAPES[c]) for c in range(9)]
    # the biased subject's explanations name each class's native background via a synonym; the clean one a shape
    explanations = {
        "biased": [Explanation.from_weights(t, {world.SYNONYMS[NATIVE_BACKGROUND[t.index]][1]: 1.0,
                                                world.SHAPES[t.index]: 1.0}) for t in targets],
        "clean": [Explanation.from_weights(t, {world.SHAPES[t.index]: 1.0}) for t in targets],
    }
    scored = task.score(_prepared(gaps), explanations)
    m = {v.name: v for v in scored.metrics}
    assert m["spearman_bg_gap"].value > 0.85  # ties within each subject's gaps keep it below 1
    assert m["spearman_subject_bg_gap"].value == pytest.approx(1.0)
    # "calm water" (lake) also names ocean, but less: lake stays the heaviest background
    assert m["native_bg_precision"].value == 1.0 and m["native_bg_precision"].n == 9  # clean classes: below threshold
    assert np.isnan(scored.per_subject["clean"]["names_native_background_per_class"]).all()
    lake, ocean = NATIVE_BACKGROUND.index("lake"), NATIVE_BACKGROUND.index("ocean")
    # "water" alone ties ocean with lake: half credit for the lake class and the ocean class
    water = {n: [Explanation.from_weights(t, {"water": 1.0}) for t in targets] for n in gaps}
    per = task.score(_prepared(gaps), water).per_subject["biased"]["names_native_background_per_class"]
    assert per[lake] == per[ocean] == 0.5 and all(p == 0.0 for i, p in enumerate(per) if i not in (lake, ocean))
    # naming the wrong background: precision 0
    wrong = {n: [Explanation.from_weights(t, {"lava" if NATIVE_BACKGROUND[t.index] != "lava" else "snow": 1.0})
                 for t in targets] for n in gaps}
    assert {v.name: v for v in task.score(_prepared(gaps), wrong).metrics}["native_bg_precision"].value == 0.0


# ---------------------------------------------------------------- end to end

TINY = dict(p_natives=(0.0, 1.0), n_train=900, n_probe=270, n_test=450, epochs=4, width=8, n_bootstrap=200)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_baselines(tmp_path_factory.mktemp("in9"), "imagenet9-background", TINY)


def test_ground_truth_is_measured_per_variant(tiny_run):
    _, results = tiny_run
    truth = results["oracle"].ground_truth
    assert set(truth) == {"cnn9-p0-s0", "cnn9-p1-s0"}
    for t in truth.values():
        assert set(t["accuracy"]) == set(world.VARIANTS) and len(t["per_class_bg_gap"]) == 9
        assert t["bg_gap"] == pytest.approx(t["accuracy"]["mixed_same"] - t["accuracy"]["mixed_rand"])
    # trained with native backgrounds only, the subject leans on them; trained on random ones it does not
    assert truth["cnn9-p1-s0"]["bg_gap"] > truth["cnn9-p0-s0"]["bg_gap"] + 0.3
    assert truth["cnn9-p1-s0"]["only_bg_t_accuracy"] > truth["cnn9-p0-s0"]["only_bg_t_accuracy"] + 0.3


def test_oracle_tracks_the_gap_and_baselines_do_not(tiny_run):
    _, results = tiny_run
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    oracle = results["oracle"]
    assert oracle.metric("spearman_bg_gap").value > 0.5
    assert oracle.metric("native_bg_precision").value > 0.7
    assert results["class-name"].metric("spearman_bg_gap").value == 0.0
    assert np.isnan(results["class-name"].metric("native_bg_precision").value)
    assert results["random"].metric("native_bg_precision").value < 0.5


# ---------------------------------------------------------------- the real path, end to end on the fixture tree

def test_real_challenge_path_scores_an_imagenet_classifier(tmp_path):
    """A (tiny, untrained) 1000-class timm model read from a safetensors file, scored on a fixture
    tree of all eight variants: its accuracies are the challenge protocol's, computed by hand here."""
    import timm
    from safetensors.torch import save_file

    from fexbench.models.pretrained import load_classifier

    torch_model = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    save_file({k: v.contiguous() for k, v in torch_model.state_dict().items()}, str(tmp_path / "in1k.safetensors"))
    spec = {"family": "safetensors", "model": str(tmp_path / "in1k.safetensors"), "arch": "test_resnet", "image_size": 32}
    root = write_challenge_tree(tmp_path / "bg_challenge", variants=world.VARIANTS, n_per_class=2)
    raw = write_mapping(root / "in_to_in9.json")
    env = Environment(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", progress=False)
    config = {"data": {"source": "challenge", "root": str(root), "image_size": 32, "preprocess": "model"},
              "subjects": [{"name": "tiny-in1k", "backbone": spec}], "n_bootstrap": 50}
    results = {r.explainer: r for r in run(["imagenet9-background"], ["oracle", "random", "class-name"], env,
                                           task_configs={"imagenet9-background": config}, log=lambda s: None)}
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    truth = results["random"].ground_truth["tiny-in1k"]
    classifier, _ = load_classifier(spec)
    mapping = np.array([raw[str(i)] for i in range(1000)])
    for variant in ("original", "mixed_rand"):
        data = load_challenge_variant(root, variant, image_size=32)
        pred = map_in1000_to_in9(classifier.activations(data.images, ("logits",))["logits"], mapping)
        assert truth["accuracy"][variant] == pytest.approx(float((pred == data.labels).mean()))
    assert truth["bg_gap"] == pytest.approx(truth["accuracy"]["mixed_same"] - truth["accuracy"]["mixed_rand"])
    assert np.isnan(results["random"].metric("native_bg_precision").value)  # no background types on the release
    assert {"test:original", "test:mixed_rand", "probe", "in_to_in9", "weights:tiny-in1k"} <= set(results["random"].hashes)


def test_real_challenge_options_are_checked(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        ImageNet9Background(data={"source": "challenge"}).prepare(Environment(cache_dir=tmp_path))
    with pytest.raises(DataError, match="unknown data option"):
        ImageNet9Background(data={"source": "challenge", "root": str(tmp_path), "colour": 1}).prepare(
            Environment(cache_dir=tmp_path))
    with pytest.raises(DataError, match="world or challenge"):
        ImageNet9Background(data={"source": "imagenet"}).prepare(Environment(cache_dir=tmp_path))
    with pytest.raises(DataError, match="subjects"):
        ImageNet9Background(data={"source": "challenge", "root": str(tmp_path)}).prepare(Environment(cache_dir=tmp_path))


# ---------------------------------------------------------------- the reference's evaluation protocol

def _save_timm(path: Path, n_classes: int, seed: int) -> dict:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=n_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"family": "safetensors", "model": str(path), "arch": "test_resnet", "image_size": 24}


def _reference_logits(spec: dict, files: list[Path], mean, std) -> np.ndarray:
    """in9_eval.py's way, written out: PIL RGB -> ToTensor -> Normalize(mean, std) -> the network."""
    import timm
    import torch
    from safetensors.torch import load_file
    from torchvision import transforms

    n_classes = load_file(spec["model"])["fc.weight"].shape[0]
    model = timm.create_model("test_resnet", pretrained=False, num_classes=n_classes)
    model.load_state_dict(load_file(spec["model"]))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        return model.eval()(x).numpy()


def test_challenge_protocol_reproduces_the_reference_evaluation(tmp_path):
    from fexbench.data.imagenet9_challenge import IMAGENET_MEAN, IMAGENET_STD, IN9_MEAN, IN9_STD

    root = write_challenge_tree(tmp_path / "bg", variants=world.VARIANTS, n_per_class=2, size=32, width=32, noise=True)
    raw = write_mapping(root / "in_to_in9.json")
    mapping = np.array([raw[str(i)] for i in range(1000)])
    in9l = _save_timm(tmp_path / "in9l.safetensors", 9, seed=1)
    in1k = _save_timm(tmp_path / "in1k.safetensors", 1000, seed=2)
    task = ImageNet9Background(data={"source": "challenge", "root": str(root), "image_size": 32},
                               subjects=[{"name": "in9l", "backbone": in9l}, {"name": "in1k", "backbone": in1k}])
    opts = task._challenge_options()
    assert opts["preprocess"] == "challenge"  # the default on the real challenge
    env = Environment(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", progress=False)
    data = load_challenge_variant(root, "mixed_rand", image_size=32, resize=False)
    files = [root / i for i in data.ids]
    assert [f.parent.name for f in files] == [CLASS_FOLDERS[y] for y in data.labels]

    # a 9-class IN-9L model: IN-9's mean/std, the same logits image for image
    subject = task._real_subject(env, {"name": "in9l", "backbone": in9l}, mapping, "challenge")
    ours = subject.model.activations(data.images, ("logits",))["logits"]
    reference = _reference_logits(in9l, files, IN9_MEAN, IN9_STD)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert not np.allclose(reference, _reference_logits(in9l, files, IMAGENET_MEAN, IMAGENET_STD), atol=1e-3)
    model_way = task._real_subject(env, {"name": "in9l", "backbone": in9l}, mapping, "model")
    squashed = load_challenge_variant(root, "mixed_rand", image_size=32)
    assert not np.allclose(model_way.model.activations(squashed.images, ("logits",))["logits"], reference, atol=1e-3)
    assert model_way.weights_hash != subject.weights_hash  # cached activations never mix the two protocols

    # a 1000-class ImageNet model: ImageNet's mean/std, argmax over 1000, then in_to_in9
    subject = task._real_subject(env, {"name": "in1k", "backbone": in1k}, mapping, "challenge")
    ours = subject.model.activations(data.images, ("logits",))["logits"].argmax(1)
    reference = map_in1000_to_in9(_reference_logits(in1k, files, IMAGENET_MEAN, IMAGENET_STD), mapping)
    np.testing.assert_array_equal(np.where(ours == 9, -1, ours), reference)

    # end to end: the task's ground truth is the reference's accuracies
    prepared = task.prepare(env)
    for variant in ("original", "mixed_same", "mixed_rand"):
        v = load_challenge_variant(root, variant, image_size=32, resize=False)
        pred = map_in1000_to_in9(_reference_logits(in1k, [root / i for i in v.ids], IMAGENET_MEAN, IMAGENET_STD),
                                 mapping)
        assert prepared.ground_truth["in1k"]["accuracy"][variant] == pytest.approx(float((pred == v.labels).mean()))


def test_challenge_protocol_refuses_resized_images(tmp_path):
    root = write_challenge_tree(tmp_path / "bg", variants=world.VARIANTS, n_per_class=1, size=32)  # 32 x 40
    with pytest.raises(DataError, match=r"unresized.*is 40x32"):
        load_challenge_variant(root, "original", image_size=32, resize=False)
    write_mapping(root / "in_to_in9.json")
    task = ImageNet9Background(data={"source": "challenge", "root": str(root), "image_size": 32},
                               subjects=[{"name": "x", "backbone": {"family": "timm", "model": "test_resnet"}}])
    with pytest.raises(DataError, match="preprocess = 'model'"):
        task.prepare(Environment(cache_dir=tmp_path / "cache"))
    with pytest.raises(DataError, match="data.preprocess = 'squash'"):
        ImageNet9Background(data={"source": "challenge", "root": str(root), "preprocess": "squash"},
                            subjects=[{"backbone": {"family": "timm", "model": "test_resnet"}}]).prepare(
            Environment(cache_dir=tmp_path / "cache"))


def test_whole_layout_is_checked_before_any_model_runs(tmp_path, monkeypatch):
    import shutil

    import fexbench.models.pretrained as pretrained

    variants = [v for v in world.VARIANTS if v != "mixed_next"]  # one variant folder missing
    root = write_challenge_tree(tmp_path / "bg", variants=variants, n_per_class=1, size=32, width=32)
    shutil.rmtree(root / "only_fg" / "val" / "05_insect")                  # a class folder missing
    for f in (root / "no_fg" / "val" / "08_fish").iterdir():                # a class folder empty
        f.unlink()
    write_mapping(root / "in_to_in9.json")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the layout was checked")

    monkeypatch.setattr(pretrained, "load_classifier", no_model)
    for preprocess in ("challenge", "model"):
        task = ImageNet9Background(data={"source": "challenge", "root": str(root), "image_size": 32,
                                         "preprocess": preprocess},
                                   subjects=[{"name": "x", "backbone": {"family": "timm", "model": "test_resnet"}}])
        with pytest.raises(DataError) as err:
            task.prepare(Environment(cache_dir=tmp_path / "cache", progress=False))
        message = str(err.value)
        assert "3 problem(s)" in message, message
        assert "mixed_next" in message and "'05_insect'" in message and "08_fish: no images" in message
