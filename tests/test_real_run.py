"""The real path end to end: `fexbench run --config` on fixture data in the exact real formats
(Waterbirds in the WILDS layout, the backgrounds challenge's tree with in_to_in9.json) with tiny
models of each family saved locally and loaded by path through the code a hub download takes.

Every explainer runs, and every shared resource comes through the real path, named in the run
config's `[resources.<name>]` tables: `clip` an open_clip model by name with a checkpoint file
(`pretrained = "<file>"`), `captioner` a BLIP saved with save_pretrained, `caption-bank` a text
file. The models are tiny and untrained: the run must complete and score, not explain well.

The run is done once per module (`real_run`); the tests read its output.
"""
import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from fexbench import cli
from fexbench.core.cache import file_sha256
from fexbench.core.threads import limited as torch_threads
from fexbench.data.concepts import content_words
from fexbench.core.results import read_result
from conftest import write_waterbirds_fixture
from fexbench.explainers.falcon import word_function
from fixture_writers import write_challenge_tree, write_mapping
from fixture_writers import write_tiny_models

EXPLAINERS = ["random", "class-name", "oracle", "falcon", "clip-dissect", "texplain", "texplain-contrast"]
TASKS = ("waterbirds-spurious", "imagenet9-background")
N_SUBJECTS = {"waterbirds-spurious": 6, "imagenet9-background": 2}
# the explainers' sizes for a test: the methods unchanged, only fewer sentences, images and steps
EXPLAINER_OPTIONS = {
    "falcon": {"min_images": 4, "class_features": 2, "max_low_images": 4, "top_captions": 3},
    "clip-dissect": {"top_k": 10},
    "texplain": {"n_sentences": 16, "n_fit": 48, "fit_epochs": 1, "fit_batch_size": 48, "hidden": 16,
                 "max_tokens": 6, "batch_size": 64},
    "texplain-contrast": {"n_sentences": 16, "n_fit": 48, "fit_epochs": 1, "fit_batch_size": 48, "hidden": 16,
                          "max_tokens": 6, "batch_size": 64},
}
# the caption bank's file: FALCON's words can only come from these
BANK_CAPTIONS = (
    "a gull standing on the ocean shore", "a loon swimming on a natural lake", "an albatross flying over the sea",
    "a cardinal perched in a bamboo forest", "a woodpecker on a tree in a broadleaf forest",
    "a nuthatch on a branch among green leaves", "waves breaking on a sandy beach", "a pond with reeds and ducks",
    "a red car parked on a city street", "a guitar leaning on a chair", "a cup of coffee on a table",
    "", "a gull standing on the ocean shore",  # a blank line and a duplicate, as real files have
)
# the tiny BLIP's word pieces: TExplain's words can only come from these
CAPTIONER_WORDS = ("a an the bird on in of over with water land sea ocean lake beach shore forest bamboo tree grass "
                   "leaf gull duck loon cardinal flying standing sitting photo picture red white green blue").split()
TINY_CLIP = "fexbench-test-tiny-clip"


def _toml_value(v):
    return json.dumps(v) if not isinstance(v, dict) else "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"


def _write_config(tmp_path: Path, subjects_wb: list[dict], subjects_in9: list[dict], wb_root: Path,
                  in9_root: Path | None, explainers=("random", "class-name", "oracle"),
                  resources: dict[str, dict] | None = None, image_size: int = 32) -> Path:
    tasks = ["waterbirds-spurious"] + (["imagenet9-background"] if in9_root else [])
    lines = [
        "[run]", "replicates = 1", f'out = "{tmp_path / "out"}"', f'cache_dir = "{tmp_path / "cache"}"', "seed = 0",
        'device = "cpu"', "progress = false", f"tasks = {json.dumps(tasks)}",
        f"explainers = {json.dumps(list(explainers))}", "",
        "[tasks.waterbirds-spurious]", "n_bootstrap = 50", "bias_threshold = 0.1",
        f'data = {{ source = "wilds", root = "{wb_root}", image_size = {image_size} }}',
        "subjects = [" + ", ".join(_toml_value(s) for s in subjects_wb) + "]", "",
    ]
    if in9_root:
        lines += ["[tasks.imagenet9-background]", "n_bootstrap = 50",
                  f'data = {{ source = "challenge", root = "{in9_root}", image_size = {image_size} }}',
                  "subjects = [" + ", ".join(_toml_value(s) for s in subjects_in9) + "]", ""]
    for name in explainers:
        if name in EXPLAINER_OPTIONS:
            lines += [f"[explainers.{name}]", *(f"{k} = {_toml_value(v)}" for k, v in EXPLAINER_OPTIONS[name].items()), ""]
    for name, options in (resources or {}).items():
        lines += [f"[resources.{name}]", *(f"{k} = {_toml_value(v)}" for k, v in options.items()), ""]
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines))
    return path


# ---------------------------------------------------------------- tiny shared resources, saved locally

def write_tiny_clip(root: Path) -> dict[str, str]:
    """A tiny open_clip ViT saved as a checkpoint file, plus its architecture as an open_clip model config.

    A built-in architecture (ViT-B-32) needs no config; a tiny one is named by its open_clip model
    config file (`config_file`, registered with open_clip.add_model_config in the run's process), and
    otherwise exactly as ViT-B-32 is: `model = "<name>"`, `pretrained = "<checkpoint file>"`.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / f"{TINY_CLIP}.json"
    config_file.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    checkpoint = root / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    return {"model": TINY_CLIP, "pretrained": str(checkpoint), "config_file": str(config_file)}


def write_tiny_blip(folder: Path) -> str:
    """A BLIP captioner (the architecture of Salesforce/blip-image-captioning-base), tiny and untrained,
    saved with save_pretrained together with its BERT tokenizer."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTIONER_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab) + 1, hidden_size=16, encoder_hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=len(vocab), sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16))
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    # from the folder's vocab.txt (transformers 5 ignores a `vocab_file=` argument: 5 special tokens only)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder))
    assert len(tokenizer) == len(vocab)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """Fixture data in the real formats, tiny models of every family and tiny resources: one
    `fexbench run --config` over both tasks and every explainer."""
    import timm
    from timm.models import save_for_hf
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    tmp_path = tmp_path_factory.mktemp("real-run")
    models = write_tiny_models(tmp_path / "models")
    wb_root = write_waterbirds_fixture(tmp_path / "waterbirds_v1.0", n_per_group=6, image_size=40)
    in9_root = write_challenge_tree(tmp_path / "bg_challenge", variants=(
        "original", "only_bg_b", "only_bg_t", "no_fg", "only_fg", "mixed_same", "mixed_rand", "mixed_next"),
        size=40, width=40)  # square, as the release's images: the challenge protocol evaluates them unresized
    write_mapping(in9_root / "in_to_in9.json")
    # ImageNet-9 subjects: a 1000-class transformers ResNet (mapped through in_to_in9.json) and a
    # 9-class timm model (as trained on IN-9L), both saved locally
    hf1000 = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                       layer_type="basic", num_labels=1000))
    hf1000.save_pretrained(tmp_path / "models" / "hf-resnet-1000")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(tmp_path / "models" / "hf-resnet-1000")
    in9l = timm.create_model("test_resnet", pretrained=False, num_classes=9)
    save_for_hf(in9l, str(tmp_path / "models" / "timm-in9l"), safe_serialization=True)
    # the shared resources, each through its real path
    bank_file = tmp_path / "captions" / "bank.txt"
    bank_file.parent.mkdir(parents=True)
    bank_file.write_text("\n".join(BANK_CAPTIONS) + "\n")
    resources = {"clip": write_tiny_clip(tmp_path / "models" / "clip-resource"),
                 "captioner": {"model": write_tiny_blip(tmp_path / "models" / "tiny-blip"), "n_memory": 4},
                 "caption-bank": {"path": str(bank_file)}}

    subjects_wb = [
        {"name": "cnn-rho0.75", "rho": 0.75, "seed": 0, "epochs": 2, "width": 4},
        {"name": "hf-resnet-head", "backbone": models["hf-resnet"], "rho": 0.75, "mode": "head", "epochs": 2},
        {"name": "hf-vit-head", "backbone": models["hf-vit"], "rho": 0.5, "mode": "head", "epochs": 2},
        {"name": "timm-all", "backbone": models["timm-resnet"], "rho": 0.75, "mode": "all", "epochs": 1},
        {"name": "safetensors-head", "backbone": models["safetensors"], "mode": "head", "epochs": 2},
        {"name": "open-clip-probe", "backbone": {k: v for k, v in models["open_clip"].items() if k != "class_names"},
         "rho": 0.5, "mode": "head", "epochs": 2},
    ]
    subjects_in9 = [
        {"name": "imagenet-resnet", "backbone": {"family": "transformers", "model": str(tmp_path / "models" / "hf-resnet-1000")}},
        {"name": "in9l-timm", "backbone": {"family": "timm", "model": str(tmp_path / "models" / "timm-in9l"), "image_size": 64}},
    ]
    # 40-pixel images: nothing on the real path may assume the world's 32 x 32 (the tiny CLIP takes 32)
    config = _write_config(tmp_path, subjects_wb, subjects_in9, wb_root, in9_root, EXPLAINERS, resources, image_size=40)
    out, err = io.StringIO(), io.StringIO()
    # one torch thread: the models are tiny, and on a shared 2-core machine a second OpenMP thread
    # made FALCON's Grad-CAM passes 10-20x slower (threads spinning while the other is descheduled)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch_threads(1):
        code = cli.main(["run", "--config", str(config)])
    return SimpleNamespace(code=code, stdout=out.getvalue(), stderr=err.getvalue(), root=tmp_path,
                           out=tmp_path / "out", cache=tmp_path / "cache", resources=resources, bank_file=bank_file)


def _metric_is_finite_or_documented_na(task: str, metric, result) -> bool:
    """A metric value is finite and in its range, or undefined (NaN, `null` in JSON) for a documented
    reason: nothing to average (n = 0), AUROC with only biased or only unbiased subjects, or
    native-background precision on the real challenge (the release records no background types)."""
    if math.isfinite(metric.value):
        low, high = metric.value_range
        return low - 1e-9 <= metric.value <= high + 1e-9
    if metric.n == 0:
        return True
    if metric.name == "auroc_biased":
        return len({t["biased"] for t in result.ground_truth.values()}) < 2
    return task == "imagenet9-background" and metric.name == "native_bg_precision"


def test_config_run_on_real_formats_scores_every_explainer_on_both_tasks(real_run):
    assert real_run.code == 0, real_run.stderr + real_run.stdout
    for task in TASKS:
        for explainer in EXPLAINERS:
            result = read_result(real_run.out / task / f"{explainer}.json")
            assert result.status == "ok", f"{task}/{explainer}: {result.error}"
            assert len(result.ground_truth) == N_SUBJECTS[task] and len(result.per_subject) == N_SUBJECTS[task]
            assert len(result.metrics) == 3
            for metric in result.metrics:
                assert _metric_is_finite_or_documented_na(task, metric, result), (task, explainer, metric)
            if explainer in EXPLAINER_OPTIONS:  # the [explainers.<name>] table reached the explainer
                assert EXPLAINER_OPTIONS[explainer].items() <= result.config["explainer"].items()
    truth = read_result(real_run.out / "waterbirds-spurious" / "oracle.json").ground_truth
    assert all(t["reliance_measure"] == "agree-disagree group accuracy gap" for t in truth.values())
    assert "summary.md" in {p.name for p in real_run.out.iterdir()}


def test_every_shared_resource_came_through_the_real_path(real_run):
    """No embedded model was trained; FALCON's words come from the caption file, TExplain's from the
    tiny BLIP's vocabulary: the configured resources, not the defaults, were used."""
    assert real_run.code == 0, real_run.stderr + real_run.stdout
    assert not (real_run.cache / "clip").exists() and not (real_run.cache / "captioner").exists()
    bank_words = {w for c in BANK_CAPTIONS for w in word_function("released")(c)}  # FALCON's default pipeline
    captioner_words = {w for word in CAPTIONER_WORDS for w in content_words(word)}
    for task in TASKS:
        for explainer, allowed in (("falcon", bank_words), ("texplain", captioner_words),
                                   ("texplain-contrast", captioner_words)):
            words = {w for s in read_result(real_run.out / task / f"{explainer}.json").per_subject.values()
                     for per_class in s["top_words"] for w in per_class}
            assert words and words <= allowed, (task, explainer, words - allowed)


def test_results_record_the_resources_they_used(real_run):
    """A result names the resources its explainer used: the CLIP checkpoint's sha256 (or path), the
    captioner's weights hash (or folder) and the caption file, in its hashes or config."""
    from fexbench.resources.captioner import load_captioner

    assert real_run.code == 0, real_run.stderr + real_run.stdout
    clip_ids = {file_sha256(real_run.resources["clip"]["pretrained"]), real_run.resources["clip"]["pretrained"]}
    folder = real_run.resources["captioner"]["model"]
    captioner_ids = {load_captioner(folder, n_memory=4).weights_hash, folder}
    bank_ids = {str(real_run.bank_file)}
    for task in TASKS:
        for explainer, needed in (("falcon", (clip_ids, bank_ids)), ("clip-dissect", (clip_ids,)),
                                  ("texplain", (captioner_ids,)), ("texplain-contrast", (captioner_ids,))):
            result = read_result(real_run.out / task / f"{explainer}.json")
            recorded = json.dumps({"hashes": result.hashes, "config": result.config})
            for ids in needed:
                assert any(i in recorded for i in ids), (task, explainer, ids)


def test_user_errors_on_the_real_path_are_one_clear_line(tmp_path, capsys):
    wb_root = write_waterbirds_fixture(tmp_path / "wb", n_per_group=2, image_size=40)
    subjects = [{"name": "cnn", "epochs": 1, "width": 4}]
    # a corrupt JPEG, named by path
    bad = next((wb_root).rglob("*.jpg"))
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = _write_config(tmp_path, subjects, [], wb_root, None)
    # a task whose data cannot be read fails its own jobs (error rows naming the file), not the run
    assert cli.main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "ERROR preparing the task" in err and bad.name in err and "Traceback" not in err
    # a missing data root, named by its key, before any work
    config.write_text(config.read_text().replace(str(wb_root), str(tmp_path / "nowhere")))
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "root" in err and "Traceback" not in err
    # a missing resource file (a CLIP checkpoint, a caption file, a captioner folder), named by its
    # key before any work; a pretrained tag is a name, not a path
    config = _write_config(tmp_path, subjects, [], tmp_path / "wb", None, resources={
        "clip": {"model": "ViT-B-32", "pretrained": str(tmp_path / "no-clip.safetensors")}})
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "resources.clip.pretrained" in err and "no-clip.safetensors" in err and "Traceback" not in err
    for name, options, key in (("caption-bank", {"path": str(tmp_path / "no-captions.txt")}, "path"),
                               ("captioner", {"model": str(tmp_path / "no-blip")}, "model")):
        config = _write_config(tmp_path, subjects, [], tmp_path / "wb", None, resources={name: options})
        assert cli.main(["run", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"resources.{name}.{key}" in err and options[key] in err, err
    from fexbench.harness.config import load_config
    config = _write_config(tmp_path, subjects, [], tmp_path / "wb", None, resources={
        "clip": {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}})
    assert load_config(config).resource_configs()["clip"]["pretrained"] == "laion2b_s34b_b79k"
