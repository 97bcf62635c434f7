"""The run's driver: a run's job graph (fexbench.harness.graph) handed to an executor
(fexbench.harness.executors), and where its time went written beside the results. The unit of
work is the executors' own (fexbench.harness.executors.execute_job around
fexbench.harness.runner.run_job): every executor runs that."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fexbench.core.cache import atomic_write_json
from fexbench.core.contract import Environment
from fexbench.core.results import JobResult
from fexbench.harness.executors import Executor, LocalExecutor
from fexbench.harness.graph import build_graph


def run(task_names: Sequence[str], explainer_names: Sequence[str], env: Environment,
        task_configs: Mapping[str, Mapping[str, Any]] | None = None,
        explainer_configs: Mapping[str, Mapping[str, Any]] | None = None,
        resume: bool = True, log: Callable[[str], None] = print, executor: Executor | None = None) -> list[JobResult]:
    """Prepare each task once, then run every explainer on it: the run's job graph
    (fexbench.harness.graph) handed to an executor (fexbench.harness.executors; default: the
    local one, in order in this process; `fexbench run` uses [run] executor, worker processes by
    default)."""
    graph = build_graph(task_names, explainer_names, env, task_configs, explainer_configs)
    started = time.perf_counter()
    output = (executor or LocalExecutor()).execute(graph, env, resume, log)
    results = output.results
    computed = sum(1 for r in results if not r.resumed)
    timing = {**output.timing, "last_run": {"wall_s": time.perf_counter() - started, "jobs_computed": computed,
                                     "jobs_resumed": len(results) - computed,
                                     "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                     else os.cpu_count()}}
    write_timing(env.out_dir, timing)
    return results


def write_timing(out_dir: Path, timing: Mapping[str, Any]) -> None:
    """Where this run's time went, per task (preparation of every replicate, each job computed now),
    merged into the folder's timing.json: `fexbench power` prices designs from it. `last_run` is the
    latest invocation's wall time and how many jobs it computed (all of them: a cold run's wall
    time), with the CPUs it could use."""
    path = Path(out_dir) / "timing.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        tasks = dict(old.get("tasks", {})) if isinstance(old, dict) else {}
    except (OSError, ValueError):
        tasks = {}
    for task, entry in timing["tasks"].items():
        previous = tasks.get(task, {}) if isinstance(tasks.get(task), dict) else {}
        jobs = {**(previous.get("jobs_s") or {}), **entry["jobs_s"]}
        prepare = entry["prepare_s"] if entry["jobs_s"] or "prepare_s" not in previous else previous["prepare_s"]
        tasks[task] = {"prepare_s": prepare, "jobs_s": jobs,
                       "replicates": entry.get("replicates", previous.get("replicates", timing["replicates"]))}
    out = {"replicates": timing["replicates"], "tasks": tasks}
    if "last_run" in timing:
        out["last_run"] = timing["last_run"]
    atomic_write_json(path, out)
