"""The example plugin (examples/explainer-plugin) end to end, without changing this environment:
installed with --no-deps into a temporary folder that only the subprocesses see (PYTHONPATH), so
its entry point exists there and nowhere else."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "explainer-plugin"
CACHE = Path(os.environ.get("FEXBENCH_TEST_PLUGIN_CACHE", "/tmp/authors/plugin-test-cache"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(PLUGIN)],
                   check=True, capture_output=True, timeout=300)
    return target


def fexbench(site: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "FEXBENCH_CHECK_CACHE": str(CACHE / "check")}
    return subprocess.run([sys.executable, "-m", "fexbench.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=site)


def test_entry_point_is_visible_only_in_the_subprocess(site):
    from fexbench.core import registry
    assert "nearest-words" not in registry.explainers.names()
    listed = fexbench(site, "list")
    assert listed.returncode == 0 and "nearest-words" in listed.stdout and "smoke" in listed.stdout


def test_plugin_passes_check_explainer(site):
    out = fexbench(site, "check-explainer", "nearest-words")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "7/7 checks passed" in out.stdout


def test_plugin_runs_in_smoke_preset_and_gates_against_its_baseline(site, tmp_path):
    """The gate against a baseline made on this machine (CPU training is not bit-identical across
    machines, so a baseline stored elsewhere can differ in its subjects): two runs of the same
    design, the second on the first's cache, compare as no change."""
    def smoke(out):
        done = fexbench(site, "run", "--preset", "smoke", "--tasks", "waterbirds-spurious,imagenet9-background",
                        "--explainers", "nearest-words,class-name", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(out))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    smoke(tmp_path / "baseline")
    smoke(tmp_path / "new")
    same = fexbench(site, "compare", str(tmp_path / "baseline"), str(tmp_path / "new"), "--margin", "0.1")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "nearest-words" in same.stdout and "no detectable change" in same.stdout
    # a regression to "restate the class name" fails the gate on at least one task's headline
    worse = fexbench(site, "compare", str(tmp_path / "new"), "--explainers", "nearest-words,class-name",
                     "--margin", "0.0")
    assert worse.returncode in (0, 1) and "class-name" in worse.stdout


def test_default_explainer_set_is_the_builtins(site):
    code = ("from fexbench.harness.config import default_config; from fexbench.core import registry; "
            "print(sorted(default_config().explainer_names()) == sorted(registry.explainers.builtin_names()), "
            "'nearest-words' in registry.explainers.names())")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
