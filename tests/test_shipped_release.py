"""The default board's release ships inside the package, and plain `fexbench run` scores on it:
no subject trained, the published default board's numbers on any machine (docs/release.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fexbench import cli, releases
from fexbench.cli.run import shipped_release_applies
from fexbench.harness import release

BOARD = Path(__file__).resolve().parents[1] / "leaderboard" / "default"


def _args(**given) -> argparse.Namespace:
    base = dict(train=False, config=None, preset=None, release=None, seed=None, replicates=None, tasks=None)
    return argparse.Namespace(**{**base, **given})


@pytest.mark.parametrize("given, applies", [
    ({}, True),
    ({"tasks": "sanity-randomization,waterbirds-spurious"}, True),
    ({"train": True}, False),
    ({"seed": 1}, False),
    ({"replicates": 5}, False),
    ({"preset": "smoke"}, False),
    ({"config": "my.toml"}, False),
    ({"release": "other.tar"}, False),
    ({"tasks": "a-plugin-task"}, False),
])
def test_plain_run_uses_the_shipped_release_unless_the_design_changes(given, applies):
    assert shipped_release_applies(_args(**given)) is applies


def test_the_shipped_release_is_the_published_default_boards():
    with release.open_release(releases.path()) as opened:
        manifest = opened.manifest
    assert manifest.design["run"]["replicates"] == 3 and manifest.design["run"]["seed"] == 0
    oracle = json.loads((BOARD / "waterbirds-spurious" / "oracle.json").read_text())
    truth = {a.name: a.sha256 for a in manifest.by_role("ground-truth")}
    for index, rep in enumerate(oracle["replicates"]):  # every subject and split of the board, by hash
        for key, digest in rep["hashes"].items():
            assert truth[f"waterbirds-spurious/replicate-{index}/{key}"] == digest


def test_plain_run_trains_nothing_and_gives_the_published_numbers(tmp_path, monkeypatch, capsys):
    import fexbench.models.subjects as subjects

    def no_training(*args, **kwargs):
        raise AssertionError("plain fexbench run trained a subject")
    monkeypatch.setattr(subjects, "train_cnn", no_training)
    rc = cli.main(["run", "--tasks", "sanity-randomization", "--explainers", "oracle,class-name",
                   "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    for explainer in ("oracle", "class-name"):
        mine = json.loads((tmp_path / "out" / "sanity-randomization" / f"{explainer}.json").read_text())
        board = json.loads((BOARD / "sanity-randomization" / f"{explainer}.json").read_text())
        assert {m["name"]: m["value"] for m in mine["metrics"]} == pytest.approx(
            {m["name"]: m["value"] for m in board["metrics"]}, abs=1e-9)
        assert mine["config"]["release"]["name"] == "fexbench-default-v2"
