"""The real path end to end: `fexbench run --config` on fixture data in the exact real formats
(Waterbirds in the WILDS layout, the backgrounds challenge's tree with in_to_in9.json) with tiny
models of each family saved locally and loaded by path through the code a hub download takes."""
import json
from pathlib import Path

import pytest

from bench import cli
from bench.results import read_result
from conftest import write_waterbirds_fixture
from test_imagenet9 import _write_mapping, write_challenge_tree
from test_pretrained import write_tiny_models

EXPLAINERS = ["random", "class-name", "oracle"]


def _toml_value(v):
    return json.dumps(v) if not isinstance(v, dict) else "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"


def _write_config(tmp_path: Path, subjects_wb: list[dict], subjects_in9: list[dict], wb_root: Path,
                  in9_root: Path | None) -> Path:
    tasks = ["waterbirds-spurious"] + (["imagenet9-background"] if in9_root else [])
    lines = [
        "[run]", f'out = "{tmp_path / "out"}"', f'cache_dir = "{tmp_path / "cache"}"', "seed = 0",
        'device = "cpu"', "progress = false", f"tasks = {json.dumps(tasks)}",
        f"explainers = {json.dumps(EXPLAINERS)}", "",
        "[tasks.waterbirds-spurious]", "n_bootstrap = 50", "bias_threshold = 0.1",
        f'data = {{ source = "wilds", root = "{wb_root}", image_size = 32 }}',
        "subjects = [" + ", ".join(_toml_value(s) for s in subjects_wb) + "]", "",
    ]
    if in9_root:
        lines += ["[tasks.imagenet9-background]", "n_bootstrap = 50",
                  f'data = {{ source = "challenge", root = "{in9_root}", image_size = 32 }}',
                  "subjects = [" + ", ".join(_toml_value(s) for s in subjects_in9) + "]", ""]
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines))
    return path


def test_config_run_on_real_formats_scores_every_explainer_on_both_tasks(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file
    from timm.models import save_for_hf
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    models = write_tiny_models(tmp_path / "models")
    wb_root = write_waterbirds_fixture(tmp_path / "waterbirds_v1.0", n_per_group=6, image_size=40)
    in9_root = write_challenge_tree(tmp_path / "bg_challenge", variants=(
        "original", "only_bg_b", "only_bg_t", "no_fg", "only_fg", "mixed_same", "mixed_rand", "mixed_next"))
    _write_mapping(in9_root / "in_to_in9.json")
    # ImageNet-9 subjects: a 1000-class transformers ResNet (mapped through in_to_in9.json) and a
    # 9-class timm model (as trained on IN-9L), both saved locally
    hf1000 = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                       layer_type="basic", num_labels=1000))
    hf1000.save_pretrained(tmp_path / "models" / "hf-resnet-1000")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(tmp_path / "models" / "hf-resnet-1000")
    in9l = timm.create_model("test_resnet", pretrained=False, num_classes=9)
    save_for_hf(in9l, str(tmp_path / "models" / "timm-in9l"), safe_serialization=True)

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
    config = _write_config(tmp_path, subjects_wb, subjects_in9, wb_root, in9_root)
    code = cli.main(["run", "--config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err + out.out
    for task in ("waterbirds-spurious", "imagenet9-background"):
        for explainer in EXPLAINERS:
            result = read_result(tmp_path / "out" / task / f"{explainer}.json")
            assert result.status == "ok", result.error
            assert len(result.ground_truth) == (6 if task == "waterbirds-spurious" else 2)
    truth = read_result(tmp_path / "out" / "waterbirds-spurious" / "oracle.json").ground_truth
    assert all(t["reliance_measure"] == "agree-disagree group accuracy gap" for t in truth.values())
    assert "summary.md" in {p.name for p in (tmp_path / "out").iterdir()}


def test_user_errors_on_the_real_path_are_one_clear_line(tmp_path, capsys):
    wb_root = write_waterbirds_fixture(tmp_path / "wb", n_per_group=2, image_size=40)
    subjects = [{"name": "cnn", "epochs": 1, "width": 4}]
    # a corrupt JPEG, named by path
    bad = next((wb_root).rglob("*.jpg"))
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    config = _write_config(tmp_path, subjects, [], wb_root, None)
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fexbench: error:") and bad.name in err and "Traceback" not in err
    # a missing data root, named by its key, before any work
    config.write_text(config.read_text().replace(str(wb_root), str(tmp_path / "nowhere")))
    assert cli.main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "root" in err and "Traceback" not in err
