"""Executors of a run's job graph (fexbench.harness.graph): here in order, or as Ray tasks.

LocalExecutor walks the graph in its order in this process and is exactly the sequential run:
the same job keys, hashes, metric values, error rows, log lines and timing.json. Its resource
nodes are lazy: a resource is built on first use inside the first job that reads it (so a
resource that cannot be built fails only the jobs that read it, and its build time counts in
that job's wall time, as it always has).

RayExecutor submits every node as a Ray task (Ray is the engine: it schedules, places, retries).
Each node asks Ray for one CPU, plus one GPU when the run's device is cuda and the node loads or
trains a model. Workers share the run's content-addressed cache (cache_dir, which must be on
storage every node mounts) and its lock-guarded builders (fexbench.core.cache.build_once), so two
workers never build one key twice. A job's worker re-prepares its task from that cache instead of
receiving a Prepared object: a Prepared holds live models and lazily built resources that do not
travel, and re-preparing from a warm cache is cheap (0.1 s for a tiny task here; loading the
subject weights and activations on a real one). It checks that the data and weight hashes it
re-derived are those its preparation node reported. Only small summaries and the JobResults
travel through Ray's object store; large arrays travel through the shared cache.

Failures: a worker that dies (OOM killer, preempted node, os._exit) is retried by Ray
(`max_retries`). Results are written only by `run_job`, atomically, into one file per
(task, explainer), so a killed attempt leaves no partial file and a retry either resumes the
complete file (same job key) or replaces it whole; no result is lost or written twice. A job that
still fails after its retries becomes an error row written by the driver.
"""
from __future__ import annotations

import dataclasses
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

from fexbench.core import profile, registry
from fexbench.core.contract import Environment
from fexbench.core.errors import UsageError
from fexbench.core.results import JobResult, result_path, write_result
from fexbench.harness.graph import JobGraph, Node
from fexbench.harness.runner import prepare_failures, resource_identity, run_job

RAY_INSTALL = 'pip install -e ".[ray]"  (or: pip install "ray[default]>=2.9")'
Log = Callable[[str], None]


def new_timing(graph: JobGraph) -> dict[str, Any]:
    return {"replicates": graph.replicates, "tasks": {}}


def status_line(task: str, explainer: str, result: JobResult) -> str:
    status = "ok" if result.status == "ok" else f"{result.status.upper()}: " + (result.error or "").splitlines()[0]
    status += " (resumed)" if result.resumed else ""
    return f"[{task}] {explainer}: {status} ({result.wall_time_s:.1f}s)"


def note_job(timing: dict[str, Any], task: str, explainer: str, result: JobResult) -> None:
    if not result.resumed and task in timing["tasks"]:
        timing["tasks"][task]["jobs_s"][explainer] = result.wall_time_s


def unknown_explainer(task: str, explainer: str, exc: Exception, env: Environment) -> JobResult:
    """A broken or unknown explainer plugin fails its own jobs only."""
    result = JobResult(task=task, explainer=explainer, oracle=False, status="error", job_key="", seed=env.seed,
                       error=str(exc))
    write_result(env.out_dir, result)
    return result


class LocalExecutor:
    """The graph in order, in this process: the sequential run. With `prefetch`, a helper process
    builds the shared resources and the later tasks' preparations into the cache meanwhile, then
    takes jobs from the end until it meets the run (fexbench.harness.prefetch): the same results,
    sooner on a machine with a second core."""

    name = "local"

    def __init__(self, prefetch: bool = False):
        self.prefetch = prefetch

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True,
                log: Log = print) -> tuple[list[JobResult], dict[str, Any]]:
        self._helper, self._resume = None, resume
        interrupted = True  # until the walk returns: any exit before that ends the helper at once
        try:
            results, timing = self._walk(graph, env, resume, log)
            interrupted = False
        finally:
            ahead = self._helper.stop(interrupted) if self._helper else {}
        for task, seconds in ahead.items():  # compute seconds, summed over processes (as with Ray)
            if task in timing["tasks"]:
                timing["tasks"][task]["prepare_s"] += seconds
        return results, timing

    def _maybe_prefetch(self, graph: JobGraph, env: Environment, seconds: float) -> None:
        """Start the helper after the first preparation, and only when that one had to compute
        (a cold cache): on a warm re-run a second process would only compete for the CPUs."""
        from fexbench.harness.prefetch import COLD_PREPARE_S, Prefetcher

        if self.prefetch and self._helper is None and seconds >= COLD_PREPARE_S:
            self._helper = Prefetcher.start(graph, env, self._resume) or False  # False: tried, not started
        elif self._helper is None:
            self._helper = False

    def _walk(self, graph: JobGraph, env: Environment, resume: bool,
              log: Log) -> tuple[list[JobResult], dict[str, Any]]:
        results: list[JobResult] = []
        timing = new_timing(graph)
        tasks: dict[str, dict[str, Any]] = {}  # task -> {"task", "prepared", "start", "failed"}
        for node in graph:
            if node.kind == "resource":
                continue  # lazy: built by env.resources on first use, inside the job that reads it
            state = tasks.setdefault(node.task, {"task": None, "prepared": [], "start": time.perf_counter(),
                                                 "failed": False})
            if state["failed"]:
                continue
            if node.kind == "prepare":
                try:
                    if state["task"] is None:
                        state["task"] = registry.tasks.get(node.task)(**node.options)
                    started = time.perf_counter()
                    with profile.stage(f"prepare {node.task}"):
                        state["prepared"].append(state["task"].prepare(env.replicate(node.replicate)))
                    self._maybe_prefetch(graph, env, time.perf_counter() - started)
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # a task that cannot prepare fails its own jobs, not the run
                    state["failed"] = True
                    results.extend(prepare_failures(node.task, graph.explainer_names, exc, env))
                    log(f"[{node.task}] ERROR preparing the task: {type(exc).__name__}: {exc}")
                    continue
                if node.replicate == graph.replicates_of(node.task) - 1:
                    elapsed = time.perf_counter() - state["start"]
                    timing["tasks"][node.task] = {"prepare_s": elapsed, "jobs_s": {}, "replicates": len(state["prepared"])}
                    prepared = state["prepared"]
                    reps = f" x {len(prepared)} replicates" if len(prepared) > 1 else ""
                    log(f"[{node.task}] prepared {len(prepared[0].cases)} subjects{reps} in {elapsed:.1f}s")
            else:
                try:
                    cls = registry.explainers.get(node.explainer)
                except registry.RegistryError as exc:
                    result = unknown_explainer(node.task, node.explainer, exc, env)
                else:
                    result = None
                    if self._helper and not self._helper.claim(node.id):  # the helper took it from the end
                        try:
                            result = self._helper.computed(node.id, result_path(env.out_dir, node.task,
                                                                                node.explainer))
                        except Exception:  # noqa: BLE001 - whatever went wrong there, compute it here
                            result = None
                    if result is None:
                        options = dict(node.options)
                        with profile.stage(f"{node.explainer} on {node.task}"):
                            result = run_job(node.task, state["task"], state["prepared"], node.explainer,
                                             lambda: cls(**options), env, resume)
                log(status_line(node.task, node.explainer, result))
                note_job(timing, node.task, node.explainer, result)
                results.append(result)
        return results, timing


# -- Ray ------------------------------------------------------------------------------------------------
def require_ray() -> Any:
    """The ray module, or one UsageError saying how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"the Ray executor needs Ray, which is not installed; install it with {RAY_INSTALL}") from None
    return ray


def worker_environment(env: Environment) -> Environment:
    """The environment shipped to workers: absolute paths (workers may start elsewhere), plain
    dicts (a config's read-only mappings do not pickle), no resources built yet, and `cuda` for
    any cuda device (Ray hands each GPU task its own device, visible as cuda:0)."""
    device = "cuda" if env.device.startswith("cuda") else env.device
    return dataclasses.replace(env, cache_dir=Path(env.cache_dir).absolute(), out_dir=Path(env.out_dir).absolute(),
                               device=device, resource_configs={k: dict(v) for k, v in env.resource_configs.items()})


def ray_build_resource(env: Environment, name: str) -> dict[str, Any]:
    """Build (or load from the shared cache) one resource, so that jobs find it built. A failure
    is not raised: the jobs that read the resource fail by themselves, named, as in a local run."""
    start = time.perf_counter()
    try:
        identity = resource_identity(env.resources[name])
        return {"ok": True, "identity": identity, "seconds": time.perf_counter() - start}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}


def ray_prepare(env: Environment, task_name: str, task_factory: Callable[..., Any], options: Mapping[str, Any],
                replicate: int) -> dict[str, Any]:
    """Prepare one replicate into the shared cache; return a small summary (or the failure)."""
    start = time.perf_counter()
    try:
        prepared = task_factory(**options).prepare(env.replicate(replicate))
        return {"ok": True, "hashes": dict(prepared.hashes), "subjects": len(prepared.cases),
                "seconds": time.perf_counter() - start}
    except Exception as exc:
        return {"ok": False, "type": type(exc).__name__, "message": str(exc),
                "traceback": traceback.format_exc(limit=-3), "seconds": time.perf_counter() - start}


def ray_job(env: Environment, task_name: str, task_factory: Callable[..., Any], task_options: Mapping[str, Any],
            explainer_name: str, explainer_factory: Callable[..., Any], explainer_options: Mapping[str, Any],
            resume: bool, replicates: int, *inputs: Any) -> JobResult | None:
    """One (task, explainer) job on a worker: re-prepare from the shared cache, then run_job
    (which writes the result atomically). None when the task failed to prepare. `inputs` are the
    preparation summaries (one per replicate), then the resource builds': top-level arguments, so
    that Ray starts the job only once they are done and hands over their values."""
    summaries = inputs[:replicates]
    if not all(s["ok"] for s in summaries):
        return None
    task = task_factory(**task_options)
    prepared = [task.prepare(env.replicate(r)) for r in range(len(summaries))]
    for r, (p, summary) in enumerate(zip(prepared, summaries)):
        if dict(p.hashes) != summary["hashes"]:
            raise RuntimeError(f"task {task_name!r} replicate {r} re-prepared on a worker to other content "
                               f"({dict(p.hashes)} vs {summary['hashes']}): is the cache on storage every node shares, "
                               f"and is the task's preparation deterministic?")
    options = dict(explainer_options)
    return run_job(task_name, task, prepared, explainer_name, lambda: explainer_factory(**options), env, resume)


class _RemoteFailure(Exception):
    """A task's preparation failed on a worker; carries the worker's exception type name and message."""


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once a Ray address that does not answer: `ray.init` would wait on its own,
    much longer, connection timeout. Only "host:port" and "ray://host:port" are checked ("auto"
    and other forms are left to Ray)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                         f"(nothing answered on {host}:{port} within {timeout_s:g} s; is `ray start --head` "
                         "running there, and is the port open?)") from None


class RayExecutor:
    """The graph as Ray tasks on a running cluster (`address`) or a local one started here."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3, gpus_per_model_node: float = 1.0):
        self.address, self.max_retries, self.gpus = address, max_retries, gpus_per_model_node
        self.ray = require_ray()

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        if self.address:
            check_reachable(self.address)
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a new local cluster"
            raise UsageError(f"cannot start or reach the Ray cluster at {where}: {exc}") from None

    def _options(self, node: Node, env: Environment) -> dict[str, Any]:
        gpu = env.device.startswith("cuda") and node.model_work
        return {"num_cpus": 1, "num_gpus": self.gpus if gpu else 0, "max_retries": self.max_retries,
                "retry_exceptions": False, "name": node.id}

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True,
                log: Log = print) -> tuple[list[JobResult], dict[str, Any]]:
        ray = self.ray
        self.connect()
        wenv = worker_environment(env)
        env_ref = ray.put(wenv)
        remote = {fn.__name__: ray.remote(fn) for fn in (ray_build_resource, ray_prepare, ray_job)}
        refs: dict[str, Any] = {}
        task_factories: dict[str, Any] = {}
        task_errors: dict[str, BaseException] = {}
        explainer_errors: dict[str, Exception] = {}
        for node in graph:  # submit everything; Ray runs a node once its inputs are done
            if node.kind == "resource":
                refs[node.id] = remote["ray_build_resource"].options(**self._options(node, env)).remote(
                    env_ref, node.resource)
            elif node.kind == "prepare":
                if node.task not in task_factories and node.task not in task_errors:
                    try:
                        task_factories[node.task] = registry.tasks.get(node.task)
                    except registry.RegistryError as exc:
                        task_errors[node.task] = exc
                if node.task in task_errors:
                    continue
                refs[node.id] = remote["ray_prepare"].options(**self._options(node, env)).remote(
                    env_ref, node.task, task_factories[node.task], node.options, node.replicate)
            else:
                if node.task in task_errors:
                    continue
                try:
                    cls = registry.explainers.get(node.explainer)
                except registry.RegistryError as exc:
                    explainer_errors[node.id] = exc
                    continue
                prep = [refs[d] for d in node.deps if d.startswith("prepare:")]
                res = [refs[d] for d in node.deps if d.startswith("resource:")]
                task_options = graph.node(node.deps[0]).options
                refs[node.id] = remote["ray_job"].options(**self._options(node, env)).remote(
                    env_ref, node.task, task_factories[node.task], task_options, node.explainer, cls,
                    node.options, resume, len(prep), *prep, *res)
        return self._collect(graph, env, refs, task_errors, explainer_errors, log)

    def _collect(self, graph: JobGraph, env: Environment, refs: Mapping[str, Any],
                 task_errors: Mapping[str, BaseException], explainer_errors: Mapping[str, Exception],
                 log: Log) -> tuple[list[JobResult], dict[str, Any]]:
        """Wait for the nodes in graph order (they run in parallel meanwhile): the log and the
        result list come out in the sequential run's order."""
        ray = self.ray
        results: list[JobResult] = []
        timing = new_timing(graph)
        failed: set[str] = set()
        for task in graph.task_names:
            preps = [n for n in graph.of_kind("prepare") if n.task == task]
            summaries = []
            try:
                if task in task_errors:
                    raise task_errors[task]
                for node in preps:
                    try:
                        summary = ray.get(refs[node.id])
                    except Exception as exc:  # the worker died more often than max_retries
                        summary = {"ok": False, "type": type(exc).__name__, "message": str(exc), "seconds": 0.0}
                    if not summary["ok"]:
                        raise type(summary["type"], (_RemoteFailure,), {})(summary["message"])
                    summaries.append(summary)
            except Exception as exc:
                failed.add(task)
                results.extend(prepare_failures(task, graph.explainer_names, exc, env))
                log(f"[{task}] ERROR preparing the task: {type(exc).__name__}: {exc}")
                continue
            elapsed = sum(s["seconds"] for s in summaries)
            timing["tasks"][task] = {"prepare_s": elapsed, "jobs_s": {}, "replicates": len(summaries)}
            reps = f" x {len(summaries)} replicates" if len(summaries) > 1 else ""
            log(f"[{task}] prepared {summaries[0]['subjects']} subjects{reps} in {elapsed:.1f}s (summed over workers)")
            for node in graph.of_kind("job"):
                if node.task != task:
                    continue
                if node.id in explainer_errors:
                    result = unknown_explainer(task, node.explainer, explainer_errors[node.id], env)
                else:
                    try:
                        result = ray.get(refs[node.id])
                    except Exception as exc:  # retries exhausted, or a worker-side failure before run_job
                        result = JobResult(task=task, explainer=node.explainer, oracle=False, status="error",
                                           job_key="", seed=env.seed,
                                           error=f"{type(exc).__name__} on a Ray worker: {exc}")
                        write_result(env.out_dir, result)
                if result is None:
                    continue
                log(status_line(task, node.explainer, result))
                note_job(timing, task, node.explainer, result)
                results.append(result)
        for node in graph.of_kind("resource"):  # surface a failed build once; its jobs carry the error
            try:
                built = ray.get(refs[node.id])
            except Exception as exc:
                built = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            if not built["ok"]:
                log(f"[resource {node.resource}] ERROR building it: {built['error']}")
        return results, timing


def make_executor(name: str = "local", address: str | None = None, prefetch: bool = False) -> LocalExecutor | RayExecutor:
    """The executor a run asked for by name; a clear UsageError for an unknown one."""
    if name == "local":
        if address:
            raise UsageError("--ray-address is for --executor ray")
        return LocalExecutor(prefetch=prefetch)
    if name == "ray":
        return RayExecutor(address)
    raise UsageError(f"unknown executor {name!r}: local or ray")
