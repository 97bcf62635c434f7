"""The layout's promises: one import namespace, no import cycles, tasks and tests independent of
each other, registries that refuse what would silently change the benchmark, job keys that change
with code versions."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fexbench.core import registry
from fexbench.core.contract import (Case, Context, Environment, Explainer, Explanation, Prepared, Probe, Scored,
                                    Subject, Target, Task)
from fexbench.core.metrics import Metric, MetricValue
from fexbench.harness.driver import run

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"fexbench": ROOT / "bench", "fexbench.explainers": ROOT / "explainers"}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "fexbench" and parts[:1] == ["explainers"]:
                continue
            out[".".join([package, *parts])] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """fexbench modules imported anywhere in a module, inside functions too (a deferred import is
    still a dependency); only `if TYPE_CHECKING:` blocks, which never run, are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("fexbench"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = module.split(".")[: len(module.split(".")) - child.level + (1 if is_package else 0)]
                    base = ".".join([*parent, base]) if base else ".".join(parent)
                if base.startswith("fexbench"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in child.names)
            walk(child)

    walk(tree)
    return found


# The direction of the layers: a module may import its own layer and the layers before it, never a
# later one. The data flow of a run: data -> subject models -> resources -> tasks and explainers ->
# the engine -> analysis of result files -> presentation -> the command line.
LAYERS = (("core", "presets", "releases"), ("data",), ("models",), ("resources",), ("tasks", "explainers"),
          ("harness", "testing", "perf"), ("analysis",), ("report",), ("cli",))


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module}: in no layer of LAYERS; add its folder there")


def test_every_import_points_down_the_layers():
    modules = _modules()
    upward = [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
              for m, p in sorted(modules.items()) for d in sorted(_imports(p, m))
              if d in modules and _layer(d) > _layer(m)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_direction_test_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fexbench.cli\n"
                      "def f():\n    from fexbench.report import site\n")
    assert _imports(module, "fexbench.core.m") == {"fexbench.report", "fexbench.report.site"}


def test_every_command_is_registered_in_the_cli_package_only():
    for path in (ROOT / "bench").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "bench").parts[:1]:
            continue
        assert "add_parser" not in path.read_text(encoding="utf-8"), f"{path}: commands live in bench/cli/"


def test_pyproject_installs_only_the_fexbench_namespace():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    assert packages and all(p == "fexbench" or p.startswith("fexbench.") for p in packages)
    groups = project["project"]["entry-points"]
    for group, entries in groups.items():
        for name, value in entries.items():
            assert value.startswith("fexbench."), f"{group}.{name} = {value} is outside the fexbench namespace"
    assert project["project"]["scripts"]["fexbench"].startswith("fexbench.")


def test_the_source_folders_do_not_import_under_their_folder_names(tmp_path):
    for name in ("bench", "explainers"):
        elsewhere = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert elsewhere.returncode != 0 and "ModuleNotFoundError" in elsewhere.stderr
        here = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
        assert here.returncode != 0 and "import fexbench" in here.stderr
    ok = subprocess.run([sys.executable, "-c", "import fexbench, fexbench.explainers"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_no_import_cycle_between_fexbench_modules():
    modules = _modules()
    graph = {m: {i for i in _imports(p, m) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)


def test_no_task_imports_another_task():
    modules = _modules()
    tasks = {m for m in modules if m.startswith("fexbench.tasks.") and not m.endswith("_zoo")}
    for m in tasks:
        deferred = set()
        for node in ast.walk(ast.parse(modules[m].read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deferred.add(node.module)
        assert not (deferred & (tasks - {m})), f"{m} imports another task: {deferred & (tasks - {m})}"


def test_no_test_module_imports_another_test_module():
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            bad = [n for n in names if n.split(".")[0] in tests]
            assert not bad, f"{path.name} imports test module(s) {bad}"


# -- registries ------------------------------------------------------------------------------------
class NotAnExplainer:
    def explain(self, subject, targets, context):
        return []


class Fine(Explainer):
    name = "fine"

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {"yes": 1.0}) for t in targets]


def test_a_registered_explainer_must_subclass_the_contract():
    with pytest.raises(registry.RegistryError, match="subclass of fexbench.core.contract.Explainer"):
        registry.register_explainer("not-an-explainer", NotAnExplainer)
    assert "not-an-explainer" not in registry.explainers.names()


def test_a_builtin_name_cannot_be_taken_without_override():
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_explainer("random", Fine)
    registry.register_explainer("random", Fine, override=True)
    try:
        assert registry.explainers.get("random") is Fine
    finally:
        registry.explainers.unregister("random")
    assert registry.explainers.get("random").__name__ == "RandomExplainer"


def test_a_plugin_that_fails_to_import_is_named_and_the_others_work(monkeypatch):
    from importlib.metadata import EntryPoint

    broken = EntryPoint("broken-plugin", "fexbench_no_such_module.sub:Thing", "fexbench.explainers")
    original = registry.explainers._entry_points

    def with_broken():
        found = original()
        found["broken-plugin"] = [broken]
        return found

    monkeypatch.setattr(registry.explainers, "_entry_points", with_broken)
    problems = registry.explainers.broken()
    assert set(problems) == {"broken-plugin"}
    assert "fexbench_no_such_module.sub:Thing" in problems["broken-plugin"]
    assert registry.explainers.get("random").__name__ == "RandomExplainer"


# -- results never go stale ----------------------------------------------------------------------
HITS = Metric("hits", "share of 'yes'", True, (0.0, 1.0), "toy", 0.0)


class Versioned(Task):
    name = "versioned"
    version = 1
    metrics = (HITS,)

    def prepare(self, env):
        probe = Probe(np.zeros((2, 2, 2, 3), np.uint8), np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32),
                      "penultimate", ("a", "b"))
        ctx = Context(probe, vocabulary=("yes",), cache_dir=env.cache_dir)
        return Prepared((Case(Subject("s0", None, ("x",), "w0"), ctx, (Target("class", 0, "x"),)),), {"s0": {}}, {"p": "h"})

    def score(self, prepared, explanations):
        value = float(np.mean([e.words(1) == ["yes"] for exps in explanations.values() for e in exps]))
        return Scored((MetricValue.of(HITS, value, (0.0, 1.0), 1),), {})


class Bumped(Versioned):
    version = 2


def test_a_changed_task_version_reruns_its_jobs_and_an_unchanged_run_resumes(tmp_path):
    registry.register_task("versioned", Versioned)
    registry.register_explainer("fine", Fine)
    env = Environment(cache_dir=tmp_path / "c", out_dir=tmp_path / "o", progress=False)
    try:
        first = run(["versioned"], ["fine"], env, log=lambda s: None)[0]
        again = run(["versioned"], ["fine"], env, log=lambda s: None)[0]
        assert again.resumed and again.job_key == first.job_key
        registry.register_task("versioned", Bumped, override=True)
        bumped = run(["versioned"], ["fine"], env, log=lambda s: None)[0]
        assert not bumped.resumed and bumped.job_key != first.job_key
        assert bumped.config["code_versions"]["task"] == 2
    finally:
        registry.tasks.unregister("versioned")
        registry.explainers.unregister("fine")


class FailsToPrepare(Versioned):
    name = "fails"

    def prepare(self, env):
        raise RuntimeError("the data folder is gone")


def test_a_task_that_fails_to_prepare_gives_error_rows_and_the_run_goes_on(tmp_path):
    from fexbench.cli import main

    registry.register_task("fails", FailsToPrepare)
    registry.register_task("versioned", Versioned)
    registry.register_explainer("fine", Fine)
    try:
        code = main(["run", "--tasks", "fails,versioned", "--explainers", "fine", "--out", str(tmp_path / "o"),
                     "--cache-dir", str(tmp_path / "c"), "--quiet"])
    finally:
        for name in ("fails", "versioned"):
            registry.tasks.unregister(name)
        registry.explainers.unregister("fine")
    assert code == 1
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "failed to prepare" in summary and "the data folder is gone" in summary
    from fexbench.core.results import read_result
    assert read_result(tmp_path / "o" / "versioned" / "fine.json").status == "ok"


def test_the_wheel_holds_only_the_fexbench_package_and_its_data(tmp_path):
    """What `pip install .` puts into site-packages: the fexbench namespace, with every subpackage
    and the data files it reads (the results schema, the presets); no `bench`, no `explainers`."""
    import zipfile

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("fexbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"fexbench"}
    assert "fexbench/core/results.schema.json" in names and "fexbench/presets/smoke.toml" in names
    assert "fexbench/releases/default.tar" in names  # plain `fexbench run` scores on it
    packages = {str(p.parent.relative_to(ROOT / "bench")).replace("/", ".") for p in (ROOT / "bench").rglob("__init__.py")}
    for package in packages - {"."}:
        assert f"fexbench/{package.replace('.', '/')}/__init__.py" in names, f"subpackage fexbench.{package} is not installed"
    assert "fexbench/explainers/falcon.py" in names
