"""The run as a job graph: its shape and keys, the local executor against the sequential loop it
replaced (same job keys, hashes, metric values), the planner's scheduling and its estimate of a
measured tiny run, and the clear error when the Ray executor is asked for without Ray."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fexbench.core import registry
from fexbench.core.errors import UsageError
from fexbench.core.results import JobResult, write_result
from fexbench import cli
from fexbench.harness.executors import LocalExecutor, error_row, make_executor
from fexbench.harness.graph import JobGraph, Node, build_graph
from fexbench.harness.plan import critical_path, make_plan, schedule
from fexbench.core.contract import Environment
from fexbench.harness.driver import run, write_timing
from fexbench.harness.runner import run_job

TASK = "waterbirds-spurious"
TINY = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2)
EXPLAINERS = ["oracle", "random", "class-name"]


def sequential_run(task_names, explainer_names, env, task_configs, resume=True):
    """The runner's loop before the graph (kept verbatim, less logging): the reference."""
    results, timing = [], {"replicates": max(1, env.replicates), "tasks": {}}
    for task_name in task_names:
        t0 = time.perf_counter()
        try:
            task = registry.tasks.get(task_name)(**task_configs.get(task_name, {}))
            prepared = [task.prepare(env.replicate(r)) for r in range(max(1, env.replicates))]
        except BaseException as exc:
            results.extend(error_row(task_name, e, env, f"task {task_name!r} failed to prepare: {exc}", keep_ok=True)
                           for e in explainer_names)
            continue
        timing["tasks"][task_name] = {"prepare_s": time.perf_counter() - t0, "jobs_s": {}}
        for explainer_name in explainer_names:
            try:
                cls = registry.explainers.get(explainer_name)
            except registry.RegistryError as exc:
                result = JobResult(task=task_name, explainer=explainer_name, oracle=False, status="error",
                                   job_key="", seed=env.seed, error=str(exc))
                write_result(env.out_dir, result)
            else:
                result = run_job(task_name, task, prepared, explainer_name, lambda: cls(), env, resume)
            if not result.resumed:
                timing["tasks"][task_name]["jobs_s"][explainer_name] = result.wall_time_s
            results.append(result)
    write_timing(env.out_dir, timing)
    return results


def fingerprint(results):
    """What must not change between executors: job keys, hashes, metric values, per-subject numbers."""
    out = {}
    for r in results:
        d = r.to_dict()
        out[(r.task, r.explainer)] = {k: d[k] for k in ("status", "job_key", "hashes", "metrics", "per_subject",
                                                        "replicates", "unit_values", "explanations", "ground_truth")}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One cold tiny run (2 replicates) through the old sequential loop: the reference."""
    root = tmp_path_factory.mktemp("graph")
    env = Environment(cache_dir=root / "cache", out_dir=root / "seq", progress=False, replicates=2)
    start = time.perf_counter()
    results = sequential_run([TASK], EXPLAINERS, env, {TASK: TINY})
    return root, env, results, time.perf_counter() - start


def test_graph_has_one_node_per_resource_replicate_and_job_in_dependency_order():
    env = Environment(replicates=2)
    graph = build_graph([TASK, "imagenet9-background"], ["oracle", "clip-dissect", "falcon"], env, {TASK: TINY})
    seen: set[str] = set()
    for node in graph:  # every node after the nodes it depends on, once
        assert set(node.deps) <= seen and node.id not in seen
        seen.add(node.id)
    assert graph.counts() == {"resource": 2, "prepare": 4, "job": 6}  # clip, caption-bank; 2 tasks x 2 replicates
    job = graph.node("job:waterbirds-spurious/falcon")
    assert set(job.deps) == {"prepare:waterbirds-spurious#0", "prepare:waterbirds-spurious#1",
                             "resource:clip", "resource:caption-bank"}
    assert graph.node("job:waterbirds-spurious/oracle").deps == ("prepare:waterbirds-spurious#0",
                                                                 "prepare:waterbirds-spurious#1")


def test_local_executor_gives_exactly_the_sequential_results(reference):
    root, env, expected, _ = reference
    graph_env = Environment(cache_dir=env.cache_dir, out_dir=root / "graph", progress=False, replicates=2)
    lines = []
    got = run([TASK], EXPLAINERS, graph_env, {TASK: TINY}, log=lines.append)
    assert [(r.task, r.explainer) for r in got] == [(r.task, r.explainer) for r in expected]
    assert fingerprint(got) == fingerprint(expected)
    assert all(r.status == "ok" for r in got)
    assert lines[0].startswith(f"[{TASK}] prepared 3 subjects x 2 replicates")
    assert (root / "graph" / "timing.json").is_file()
    again = run([TASK], EXPLAINERS, graph_env, {TASK: TINY}, log=lines.append, executor=LocalExecutor())
    assert all(r.resumed for r in again)  # same job keys: resumed


def test_schedule_adds_up_dependent_stages_and_spreads_independent_jobs():
    nodes = (Node("prepare", "prepare:t#0"),
             Node("job", "job:t/a", ("prepare:t#0",)), Node("job", "job:t/b", ("prepare:t#0",)))
    graph = JobGraph(nodes, ("t",), ("a", "b"), 1)
    cost = {"prepare:t#0": 5.0, "job:t/a": 10.0, "job:t/b": 10.0}
    assert schedule(graph, cost, 1) == 25.0
    assert schedule(graph, cost, 2) == 15.0
    assert critical_path(graph, cost) == 15.0


def cli_run(config: Path, root: Path, *flags: str) -> float:
    """A cold `fexbench run` in a fresh process (as a user runs it); its printed wall time."""
    # --threads 1: no worker processes for the zoo, whose start-up cost (a few seconds) does not
    # scale with replicates and would dominate a run this small
    out = subprocess.run([sys.executable, "-m", "fexbench.cli", "run", "--config", str(config), "--quiet",
                          "--out", str(root / "out"), "--cache-dir", str(root / "cache"), "--threads", "1", *flags],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    return float(re.search(r"wall time: ([0-9.]+)s", out).group(1))


def test_plan_is_calibrated_by_a_measured_pilot_and_scales_with_replicates(tmp_path, capsys):
    """A cold pilot of one replicate calibrates the planner to this machine; the plan of the
    two-replicate run then costs more than the one-replicate plan (one worker: in order). How close a
    plan comes to a measured run is a speed figure, printed by `fexbench plan` against measured runs
    (docs/performance.md), not a test: a wall-clock bound fails on a loaded machine."""
    config = tmp_path / "tiny.toml"
    config.write_text(f'[run]\ntasks = ["{TASK}"]\nexplainers = {EXPLAINERS!r}\nreplicates = 2\n'.replace("'", '"')
                      + f"[tasks.{TASK}]\n" + "".join(f"{k} = {v!r}\n" for k, v in TINY.items()), encoding="utf-8")
    pilot = cli_run(config, tmp_path / "pilot", "--seed", "1", "--replicates", "1")
    assert cli.main(["plan", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "job graph: 5 nodes" in out and "2 task preparations" in out and "3 explain+score jobs" in out
    timing = json.loads((tmp_path / "pilot" / "out" / "timing.json").read_text())
    one = make_plan([TASK], EXPLAINERS, Environment(replicates=1), {TASK: TINY}, timing=timing)
    plan = make_plan([TASK], EXPLAINERS, Environment(replicates=2), {TASK: TINY}, timing=timing)
    assert one.calibrated and plan.calibrated and plan.wall_s == pytest.approx(plan.total_s)
    assert 0 < one.wall_s <= pilot  # the pilot's own work, without its process's start-up
    assert plan.wall_s > one.wall_s  # every replicate prepares and runs again (the process starts once)
    assert cli.main(["plan", "--config", str(config), "--timing", str(tmp_path / "pilot" / "out" / "timing.json")]) == 0
    assert "calibrated to the given timing.json" in capsys.readouterr().out
    two = make_plan([TASK], EXPLAINERS, Environment(replicates=2), {TASK: TINY}, workers=2, timing=timing)
    assert two.wall_s < plan.wall_s  # the replicates prepare side by side


def test_plan_rejects_bad_worker_counts_in_one_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["plan", "--workers", "0"])
    assert "--workers: must be at least 1" in capsys.readouterr().err
    with pytest.raises(UsageError, match="at least 1"):
        make_plan([TASK], EXPLAINERS, Environment(), {TASK: TINY}, gpus=0)


def test_ray_executor_without_ray_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(UsageError, match=r'pip install -e "\.\[ray\]"'):
        make_executor("ray")
    code = cli.main(["run", "--tasks", TASK, "--explainers", "oracle", "--out", str(tmp_path / "o"),
                     "--cache-dir", str(tmp_path / "c"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "needs Ray" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing ran
