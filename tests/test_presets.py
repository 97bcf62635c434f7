"""Presets ship as package data, are listed, validate, and `smoke` runs every task end to end.

The end-to-end smoke run is marked `slow` (about 30 s of CPU cold; 2-3 minutes of wall time on a
loaded shared machine)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fexbench import presets
from fexbench.core import registry
from fexbench.harness.config import default_config, load_config


def test_presets_are_package_data_and_validate():
    assert {"smoke", "full"} <= set(presets.names())
    smoke, full = load_config(presets.path("smoke")), load_config(presets.path("full"))
    assert smoke.task_names() == registry.tasks.names()  # every task
    assert smoke.run.job_time_limit_s and full.run.job_time_limit_s
    assert full.run.replicates > default_config().run.replicates >= 3  # publication grade: more than the default
    assert set(full.explainer_names()) == registry.explainers.builtin_names()
    env = smoke.environment()
    assert env.replicates == 1 and env.job_time_limit_s == smoke.run.job_time_limit_s
    assert env.resource_configs["clip"]["epochs"] == 1


def test_unknown_preset_is_one_clear_line(capsys):
    from fexbench.cli import main
    assert main(["run", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and "smoke" in err


def test_config_can_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[run]\npreset = "smoke"\nseed = 3\n[tasks.waterbirds-spurious]\nn_probe = 100\n')
    config = load_config(path)
    assert config.run.seed == 3 and config.run.replicates == 1
    assert config.task_configs()["waterbirds-spurious"]["n_probe"] == 100
    assert config.task_configs()["waterbirds-spurious"]["n_train"] == 300  # the preset's other options kept


@pytest.mark.slow
def test_smoke_preset_runs_every_task_and_metric(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "fexbench.cli", "run", "--preset", "smoke", "--quiet",
                          "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    from fexbench.core.results import read_results_dir
    results, problems = read_results_dir(tmp_path / "out")
    assert not problems
    assert {r.task for r in results} == set(registry.tasks.names())
    for r in results:
        task = registry.tasks.get(r.task)
        assert r.status == "ok", (r.task, r.explainer, r.error)
        assert [m.name for m in r.metrics] == [m.name for m in task.metrics]
