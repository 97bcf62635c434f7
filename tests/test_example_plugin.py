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


BASELINE = PLUGIN / "baseline"
GATE = ("--preset", "ci", "--explainers", "nearest-words,oracle,random,class-name", "--quiet")


@pytest.fixture(scope="module")
def flipped_site(tmp_path_factory):
    """The plugin with a deliberate sign-flip bug: it names what a target's top images lack."""
    import shutil
    source = tmp_path_factory.mktemp("flipped-src") / "plugin"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("baseline", "build", "*.egg-info"))
    module = source / "fexbench_nearest" / "__init__.py"
    right = "contrast = self._images[top].mean(axis=0) - self._images.mean(axis=0)"
    assert right in module.read_text()
    module.write_text(module.read_text().replace(
        right, "contrast = self._images.mean(axis=0) - self._images[top].mean(axis=0)"))
    target = tmp_path_factory.mktemp("flipped-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    return target


def _baseline_of(task: str, dest: Path) -> Path:
    """The stored baseline's results of one task (the gate below runs that task only)."""
    import shutil
    shutil.copytree(BASELINE / task, dest / task)
    for name in ("run-config.json", "environment.json", "environment.lock"):
        if (BASELINE / name).exists():
            shutil.copy(BASELINE / name, dest / name)
    return dest


def test_the_ci_gate_passes_the_plugin_and_fails_its_sign_flip(site, flipped_site, tmp_path):
    """ci.sh's gate: the `ci` preset scores on the shipped release (nothing trained), so the stored
    baseline, made elsewhere, holds here; the accepted version passes it and a sign-flip bug fails
    it. One task of the preset (concept-transfer: 24 targets a replicate) keeps the test short; ci.sh runs all three."""
    cache, task = str(tmp_path / "cache"), "concept-transfer"
    baseline = _baseline_of(task, tmp_path / "baseline")
    good = fexbench(site, "run", *GATE, "--tasks", task, "--cache-dir", cache, "--out", str(tmp_path / "good"))
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    passed = fexbench(site, "compare", str(baseline), str(tmp_path / "good"), "--margin", "0.05")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "coverage: 4 of 4 BASE jobs compared" in passed.stdout
    bad = fexbench(flipped_site, "run", *GATE, "--tasks", task, "--cache-dir", cache, "--out", str(tmp_path / "flipped"))
    assert bad.returncode == 0, bad.stdout[-2000:] + bad.stderr[-2000:]
    failed = fexbench(flipped_site, "compare", str(baseline), str(tmp_path / "flipped"), "--margin", "0.05")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "REGRESSION" in failed.stdout and "nearest-words" in failed.stdout


def test_default_explainer_set_is_the_builtins(site):
    code = ("from fexbench.harness.config import default_config; from fexbench.core import registry; "
            "print(sorted(default_config().explainer_names()) == sorted(registry.explainers.builtin_names()), "
            "'nearest-words' in registry.explainers.names())")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
