"""Executors of a run's job graph (fexbench.harness.graph): one unit of work, three ways to schedule it.

The unit of work is what runs on a worker, whatever the executor (after HELM's run_one/run_all split):

- `prepare_replicate(PrepareSpec)`: one `Task.prepare` of one replicate into the shared,
  content-addressed cache; returns a small `Summary` (its data and weight hashes, its subjects,
  its compute seconds, or its failure);
- `build_resource(ResourceSpec)`: one shared resource built (or loaded) into the cache;
- `execute_job(JobSpec, *summaries)`: one (task, explainer) job. The worker re-prepares the task
  from the shared cache (a Prepared holds live models and lazily built resources that do not
  travel), checks ONCE that the data and weight hashes it re-derived are those its preparation
  nodes reported, then calls `fexbench.harness.runner.run_job`, which writes the result atomically.

Executors only schedule those calls and report what came back through one `Outcomes` (the log
lines, the result rows in graph order, timing.json's entries, and the one error-row builder):

- `LocalExecutor` (`--executor local`): the graph in order in this process, for debugging and for
  the Python API's default. Its resource nodes are lazy: a resource is built inside the first job
  that reads it, as in the sequential run.
- `ProcessExecutor` (`--executor process`, the command line's default): N worker processes
  (spawned, never forked) over the graph; a node is dispatched as soon as its inputs are done,
  the longest remaining path first (node costs from fexbench.harness.plan, calibrated by the
  folder's timing.json when there is one). N is the run's thread budget (the usable CPUs,
  fexbench.core.threads), never more than the graph's nodes; each worker computes with
  budget // N threads. With one usable CPU the graph runs in this process (as `local`).
- `RayExecutor` (`--executor ray`): every node a Ray task on a cluster, calling the same three
  functions.

A worker that dies (OOM killer, os._exit) is retried: by Ray (`max_retries`), or by the process
executor on a fresh pool (`retries`, once by default). Results are written only by `run_job`,
atomically, into one file per (task, explainer): a killed attempt leaves no partial file and a
retry either resumes the complete file (same job key) or replaces it whole. A job that still
fails becomes an error row.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import multiprocessing
import multiprocessing.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

from fexbench.core import profile, registry
from fexbench.core.contract import Environment, Prepared
from fexbench.core.errors import UsageError
from fexbench.core.results import JobResult, ResultsError, read_result, result_path, write_result
from fexbench.harness.graph import JobGraph, Node, prepare_id
from fexbench.harness.runner import resource_identity, run_job

EXECUTORS = ("process", "local", "ray")
RAY_INSTALL = 'pip install -e ".[ray]"  (or: pip install "ray[default]>=2.9")'
INTERRUPT_GRACE_S = 3.0  # how long an interrupted run waits for its workers to leave before killing them
Log = Callable[[str], None]


# -- the unit of work ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrepareSpec:
    """One replicate's preparation. The factory travels with it (a task registered only in the
    driver's process still prepares on a worker)."""

    env: Environment
    task: str
    factory: Callable[..., Any]
    options: Mapping[str, Any]
    replicate: int


@dataclass(frozen=True)
class ResourceSpec:
    """One shared resource to build (or load) into the cache."""

    env: Environment
    name: str


@dataclass(frozen=True)
class JobSpec:
    """One (task, explainer) job over the task's `replicates` replicates."""

    env: Environment
    task: str
    task_factory: Callable[..., Any]
    task_options: Mapping[str, Any]
    explainer: str
    explainer_factory: Callable[..., Any]
    explainer_options: Mapping[str, Any]
    replicates: int
    resume: bool = True


@dataclass(frozen=True)
class Summary:
    """What a preparation or a resource build reports: small, it travels between processes."""

    node: str
    ok: bool
    seconds: float
    hashes: Mapping[str, str] = field(default_factory=dict)
    subjects: int = 0
    identity: str | None = None  # a resource's weights or content hash
    error_type: str = ""
    message: str = ""
    traceback: str = ""

    @property
    def error(self) -> str:
        return f"{self.error_type}: {self.message}"


def failure(node: str, exc: BaseException, seconds: float = 0.0, tb: str = "") -> Summary:
    return Summary(node, False, seconds, error_type=type(exc).__name__, message=str(exc), traceback=tb)


class _Memo:
    """This process's last task preparation and environment, so that consecutive jobs of one task
    in one process do not re-read the cache and share built resources. On in the local executor and
    in the process executor's workers (one run each); off elsewhere (a Ray worker serves many runs)."""

    def __init__(self) -> None:
        self.on = False
        self.clear()

    def clear(self) -> None:
        self.env: Environment | None = None
        self.key: str | None = None
        self.task: Any = None
        self.prepared: dict[int, Prepared] = {}

    def environment(self, env: Environment) -> Environment:
        if not self.on:
            return env
        if self.env is None or self.env != env:
            self.clear()
            self.env = env
        return self.env

    def task_instance(self, name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
        try:
            key = json.dumps([name, options], sort_keys=True, default=repr)
        except (TypeError, ValueError):
            key = None
        if not self.on or key is None:
            return factory(**options)
        if key != self.key:
            self.key, self.task, self.prepared = key, factory(**options), {}
        return self.task

    def keep(self, task: Any, replicate: int, prepared: Prepared) -> None:
        if self.on and task is self.task:
            self.prepared[replicate] = prepared

    def get(self, task: Any, replicate: int) -> Prepared | None:
        return self.prepared.get(replicate) if self.on and task is self.task else None


_memo = _Memo()


def prepare_replicate(spec: PrepareSpec) -> Summary:
    """Prepare one replicate into the shared cache; a failure is reported, not raised."""
    node, start = prepare_id(spec.task, spec.replicate), time.perf_counter()
    env = _memo.environment(spec.env)
    try:
        task = _memo.task_instance(spec.task, spec.factory, spec.options)
        with profile.stage(f"prepare {spec.task}"):
            prepared = task.prepare(env.replicate(spec.replicate))
        _memo.keep(task, spec.replicate, prepared)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a task that cannot prepare fails its own jobs, not the run (even SystemExit)
        return failure(node, exc, time.perf_counter() - start, traceback.format_exc(limit=-3))
    return Summary(node, True, time.perf_counter() - start, hashes=dict(prepared.hashes), subjects=len(prepared.cases))


def build_resource(spec: ResourceSpec) -> Summary:
    """Build (or load from the shared cache) one resource, so that jobs find it built. A failure is
    reported, not raised: the jobs that read the resource fail by themselves, named."""
    node, start = f"resource:{spec.name}", time.perf_counter()
    env = _memo.environment(spec.env)
    try:
        identity = resource_identity(env.resources[spec.name])
    except Exception as exc:  # noqa: BLE001
        return failure(node, exc, time.perf_counter() - start)
    return Summary(node, True, time.perf_counter() - start, identity=identity)


def check_hashes(task: str, prepared: list[Prepared], summaries: tuple[Summary, ...]) -> None:
    """The one check a job makes: what it re-prepared is what its preparation nodes reported."""
    for r, (p, summary) in enumerate(zip(prepared, summaries)):
        if dict(p.hashes) != dict(summary.hashes):
            raise RuntimeError(f"task {task!r} replicate {r} re-prepared on a worker to other content "
                               f"({dict(p.hashes)} vs {dict(summary.hashes)}): is the cache on storage every "
                               f"worker shares, and is the task's preparation deterministic?")


def execute_job(spec: JobSpec, *inputs: Summary) -> JobResult | None:
    """One (task, explainer) job on a worker: re-prepare the task from the shared cache (this
    process's own preparation when it has it), check the hashes against the preparation summaries,
    then `run_job` (which writes the result atomically). None when the task failed to prepare.
    `inputs` are the preparation summaries (one per replicate, in order), then any others (a Ray
    job also receives its resource builds': top-level arguments, so that Ray starts the job only
    once they are done)."""
    summaries = inputs[:spec.replicates]
    if len(summaries) < spec.replicates or not all(s.ok for s in summaries):
        return None
    env = _memo.environment(spec.env)
    task = _memo.task_instance(spec.task, spec.task_factory, spec.task_options)
    prepared = []
    for r in range(spec.replicates):
        kept = _memo.get(task, r)
        if kept is None:
            with profile.stage(f"reload {spec.task}"):
                kept = task.prepare(env.replicate(r))
            _memo.keep(task, r, kept)
        prepared.append(kept)
    check_hashes(spec.task, prepared, summaries)
    options = dict(spec.explainer_options)
    with profile.stage(f"{spec.explainer} on {spec.task}"):
        return run_job(spec.task, task, prepared, spec.explainer, lambda: spec.explainer_factory(**options), env,
                       spec.resume)


# -- outcomes: results, timing and log lines, the same for every executor -------------------------------
@dataclass(frozen=True)
class RunOutput:
    """What an executor returns: the job results in graph order, and timing.json's content."""

    results: list[JobResult]
    timing: dict[str, Any]


class Executor(Protocol):
    """Runs a job graph: every job's result (written by the job itself) and where the time went."""

    name: str

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True, log: Log = print) -> RunOutput: ...


def error_row(task: str, explainer: str, env: Environment, message: str, keep_ok: bool = False) -> JobResult:
    """The error row of a job that could not run (its task failed to prepare, its explainer is
    unknown or broken, its worker died). Written into the results folder, unless `keep_ok` and an
    ok result of an earlier run is there (a failure to prepare today does not erase a good result)."""
    row = JobResult(task=task, explainer=explainer, oracle=False, status="error", job_key="", seed=env.seed,
                    error=message)
    if keep_ok:
        path = result_path(env.out_dir, task, explainer)
        try:
            if path.exists() and read_result(path).status == "ok":
                return row
        except ResultsError:
            pass
    write_result(env.out_dir, row)
    return row


def status_line(task: str, explainer: str, result: JobResult) -> str:
    status = "ok" if result.status == "ok" else f"{result.status.upper()}: " + (result.error or "").splitlines()[0]
    status += " (resumed)" if result.resumed else ""
    return f"[{task}] {explainer}: {status} ({result.wall_time_s:.1f}s)"


class Outcomes:
    """Turns what an executor reports (preparations, jobs, failures, in any order) into the run's
    log lines, its result rows in graph order and timing.json: per task the compute seconds of its
    preparations summed over processes (`prepare_s`), each computed job's wall time (`jobs_s`) and
    its number of replicates."""

    def __init__(self, graph: JobGraph, env: Environment, log: Log, summed: bool = False):
        self.graph, self.env, self.log, self.summed = graph, env, log, summed
        self.timing: dict[str, Any] = {"replicates": graph.replicates, "tasks": {}}
        self.rows: dict[str, JobResult] = {}
        self.replicates: dict[str, dict[int, Summary]] = {}
        self.failed: set[str] = set()

    def summaries(self, task: str) -> tuple[Summary, ...]:
        got = self.replicates.get(task, {})
        return tuple(got[r] for r in range(self.graph.replicates_of(task)) if r in got)

    def ready(self, task: str) -> bool:
        return task not in self.failed and len(self.summaries(task)) == self.graph.replicates_of(task)

    def prepared(self, node: Node, summary: Summary) -> bool:
        """One replicate done; False once the task has failed (its jobs are then error rows)."""
        task = node.task
        if task in self.failed:
            return False
        if not summary.ok:
            self.task_failed(task, summary)
            return False
        self.replicates.setdefault(task, {})[node.replicate] = summary
        if self.ready(task):
            done = self.summaries(task)
            seconds = sum(s.seconds for s in done)
            self.timing["tasks"][task] = {"prepare_s": seconds, "jobs_s": {}, "replicates": len(done)}
            reps = f" x {len(done)} replicates" if len(done) > 1 else ""
            where = " (summed over workers)" if self.summed else ""
            self.log(f"[{task}] prepared {done[0].subjects} subjects{reps} in {seconds:.1f}s{where}")
        return True

    def task_failed(self, task: str, summary: Summary) -> None:
        """One error row per job of a task that could not prepare, naming the task and the cause."""
        if task in self.failed:
            return
        self.failed.add(task)
        message = f"task {task!r} failed to prepare: {summary.error}\n{summary.traceback}"
        for node in self.graph.of_kind("job"):
            if node.task == task:
                self.rows[node.id] = error_row(task, node.explainer, self.env, message, keep_ok=True)
        self.log(f"[{task}] ERROR preparing the task: {summary.error}")

    def job(self, node: Node, result: JobResult | None) -> None:
        if result is None or node.task in self.failed:
            return
        self.rows[node.id] = result
        self.log(status_line(node.task, node.explainer, result))
        if not result.resumed and node.task in self.timing["tasks"]:
            self.timing["tasks"][node.task]["jobs_s"][node.explainer] = result.wall_time_s

    def job_failed(self, node: Node, message: str) -> None:
        self.job(node, error_row(node.task, node.explainer, self.env, message))

    def resource(self, node: Node, summary: Summary) -> None:
        """A failed build is logged once; the jobs that read the resource carry the error."""
        if not summary.ok:
            self.log(f"[resource {node.resource}] ERROR building it: {summary.error}")

    def output(self) -> RunOutput:
        rows = [self.rows[n.id] for n in self.graph.of_kind("job") if n.id in self.rows]
        return RunOutput(rows, self.timing)


class Factories:
    """The registry's task and explainer factories, looked up once in the driver's process (a
    component registered only there still runs on a worker: its factory travels with the spec)."""

    def __init__(self, graph: JobGraph):
        self.tasks: dict[str, Callable[..., Any]] = {}
        self.task_errors: dict[str, Summary] = {}
        self.explainers: dict[str, Callable[..., Any]] = {}
        self.explainer_errors: dict[str, str] = {}
        for task in graph.task_names:
            try:
                self.tasks[task] = registry.tasks.get(task)
            except registry.RegistryError as exc:
                self.task_errors[task] = failure(prepare_id(task, 0), exc)
        for explainer in graph.explainer_names:
            try:
                self.explainers[explainer] = registry.explainers.get(explainer)
            except registry.RegistryError as exc:  # a broken or unknown plugin fails its own jobs only
                self.explainer_errors[explainer] = str(exc)

    def prepare(self, node: Node, env: Environment) -> PrepareSpec:
        return PrepareSpec(env, node.task, self.tasks[node.task], dict(node.options), node.replicate)

    def job(self, graph: JobGraph, node: Node, env: Environment, resume: bool) -> JobSpec:
        return JobSpec(env, node.task, self.tasks[node.task], dict(graph.node(node.deps[0]).options), node.explainer,
                       self.explainers[node.explainer], dict(node.options), graph.replicates_of(node.task), resume)


def worker_environment(env: Environment, progress: bool | None = None) -> Environment:
    """The environment shipped to workers: absolute paths (workers may start elsewhere), plain
    dicts (a config's read-only mappings do not pickle), no resources built yet, and `cuda` for
    any cuda device (Ray hands each GPU task its own device, visible as cuda:0)."""
    device = "cuda" if env.device.startswith("cuda") else env.device
    return dataclasses.replace(env, cache_dir=Path(env.cache_dir).absolute(), out_dir=Path(env.out_dir).absolute(),
                               device=device, resource_configs={k: dict(v) for k, v in env.resource_configs.items()},
                               task_replicates=dict(env.task_replicates),
                               progress=env.progress if progress is None else progress)


# -- local ----------------------------------------------------------------------------------------------
class LocalExecutor:
    """The graph in order, in this process: the sequential run (and the Python API's default)."""

    name = "local"

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True, log: Log = print) -> RunOutput:
        outcomes, factories = Outcomes(graph, env, log), Factories(graph)
        _memo.on = True
        _memo.clear()
        try:
            for node in graph:
                if node.kind == "resource" or node.task in outcomes.failed:
                    continue  # resources are lazy: built by env.resources inside the first job that reads one
                if node.task in factories.task_errors:
                    outcomes.task_failed(node.task, factories.task_errors[node.task])
                elif node.kind == "prepare":
                    outcomes.prepared(node, prepare_replicate(factories.prepare(node, env)))
                elif node.explainer in factories.explainer_errors:
                    outcomes.job_failed(node, factories.explainer_errors[node.explainer])
                else:
                    outcomes.job(node, execute_job(factories.job(graph, node, env, resume), *outcomes.summaries(node.task)))
        finally:
            _memo.clear()  # a later run re-reads the cache (and sees whatever changed there)
            _memo.on = False
        return outcomes.output()


# -- processes ------------------------------------------------------------------------------------------
def worker_split(env: Environment, graph: JobGraph) -> tuple[int, int]:
    """(worker processes, threads of each) for the process executor: the run's thread budget
    (env.threads, else the usable CPUs) split into processes, never more than the graph's nodes."""
    from fexbench.core.threads import available_cpus

    budget = int(env.threads or 0) or available_cpus()
    processes = max(1, min(budget, len(graph)))
    return processes, max(1, budget // processes)


def can_spawn() -> bool:
    """A spawned process starts from the main module's file: refused for stdin ("<stdin>")."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def longest_path_first(graph: JobGraph, env: Environment) -> dict[str, float]:
    """Each node's remaining path (its cost plus its longest chain of dependants), from the
    planner's cost model (fexbench.harness.plan), calibrated by the results folder's timing.json
    when there is one; unit costs by kind when the model cannot price the graph."""
    cost = {n.id: {"resource": 3.0, "prepare": 2.0, "job": 1.0}.get(n.kind, 1.0) for n in graph}
    try:
        from fexbench.harness.plan import CostModel

        model = CostModel({n.task: dict(n.options) for n in graph.of_kind("prepare")},
                          {n.explainer: dict(n.options) for n in graph.of_kind("job")}, env, distributed=True)
        try:
            timing = json.loads((Path(env.out_dir) / "timing.json").read_text(encoding="utf-8"))
            if isinstance(timing, dict):
                model.calibrate(graph, timing)
        except (OSError, ValueError):
            pass
        cost = {n.id: float(model.estimate(n, graph.replicates_of(n.task)).seconds) for n in graph}
    except Exception:  # noqa: BLE001 - an order only: any order gives the same results
        pass
    children: dict[str, list[str]] = {n.id: [] for n in graph}
    for n in graph:
        for d in n.deps:
            children[d].append(n.id)
    rank: dict[str, float] = {}
    for n in reversed(graph.nodes):  # the graph's order respects every dependency
        rank[n.id] = cost[n.id] + max((rank[c] for c in children[n.id]), default=0.0)
    return rank


def _started() -> None:
    """A no-op: submitting one per worker starts every worker at once."""


def _worker_init(threads: int, profile_dir: str) -> None:
    """A process executor's worker: its share of the run's threads, the memo on (one run), its
    profile sent back at its end, and a graceful exit on SIGTERM. SIGINT is ignored from the start
    (inherited): Ctrl-C is the driver's to handle, wherever it lands in a worker."""
    from fexbench.core import threads as policy

    _memo.on = True
    signal.signal(signal.SIGTERM, _leave)
    policy.apply(policy.ThreadChoice(threads, "process executor"))
    profile.reset()
    multiprocessing.util.Finalize(None, _write_profile, args=(profile_dir,), exitpriority=10)


def _write_profile(folder: str) -> None:
    try:
        path = Path(folder) / f"{os.getpid()}.json"
        path.write_text(json.dumps({k: list(v) for k, v in profile.totals().items()}), encoding="utf-8")
    except Exception:  # noqa: BLE001 - a missing table is no reason to lose the run
        pass


def _leave(signum: int, frame: Any) -> None:
    """End this worker now, and its own worker processes (a zoo's): cache writes are atomic and
    file locks die with their holders; the finalizers release this process's semaphores first."""
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except Exception:  # noqa: BLE001
        pass
    multiprocessing.util._run_finalizers(0)
    os._exit(128 + signum)


@contextmanager
def _spawn_settings(threads: int, progress: bool) -> Iterator[None]:
    """What the workers inherit when they start: their thread environment (set before numpy or
    torch load; OpenMP threads that sleep instead of spinning, since processes share the cores), no
    progress bars of the model hubs when the run has none, and SIGINT ignored (a disposition that
    survives exec, unlike a handler: a worker cannot be interrupted while it imports, so Ctrl-C
    is the driver's alone). The driver ignores it too for these few milliseconds (a Ctrl-C that
    lands exactly then is lost: press it again)."""
    names = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    if not progress:
        names["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    before = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: the workers keep the default
        handler = None
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Pool:
    """A started process pool: every worker running, known by its process."""

    def __init__(self, factory: Callable[..., Any], processes: int, threads: int, progress: bool, profile_dir: str):
        before = set(multiprocessing.active_children())
        with _spawn_settings(threads, progress):
            self.pool = factory(max_workers=processes, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_init, initargs=(threads, profile_dir))
            for _ in range(processes):
                self.pool.submit(_started)
        self.workers = [p for p in multiprocessing.active_children() if p not in before]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def kill(self, grace_s: float = INTERRUPT_GRACE_S) -> None:
        """End every worker and its own workers: first asked (SIGTERM: it releases what it holds),
        then killed."""
        import psutil

        for p in self.workers:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.workers:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                try:
                    family = psutil.Process(p.pid).children(recursive=True)
                except psutil.Error:
                    family = []
                for proc in family:
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass
                p.kill()
                p.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)


class _NoProcesses(Exception):
    """No process pool could start on this platform."""


def unpicklable_components(graph: JobGraph) -> list[str]:
    """The graph's tasks and explainers whose registered factory a spawned worker could not receive
    (pickled by reference: a class defined inside a function, a lambda, a notebook's __main__)."""
    import pickle

    names = [("task", t, registry.tasks) for t in graph.task_names]
    names += [("explainer", e, registry.explainers) for e in graph.explainer_names]
    bad = []
    for kind, name, reg in names:
        try:
            factory = reg.get(name)
        except Exception:
            continue  # unknown: becomes an error row as usual
        module = getattr(factory, "__module__", "")
        try:
            pickle.dumps(factory)
        except Exception:
            bad.append(f"{kind} {name!r}")
            continue
        if module == "__main__":
            bad.append(f"{kind} {name!r}")
    return bad


class ProcessExecutor:
    """The graph over N worker processes, nodes dispatched as their inputs finish, the longest
    remaining path first. `processes` overrides N; `pool` is the pool class
    (concurrent.futures.ProcessPoolExecutor or one with its signature); `retries`: how often a node
    whose worker died is tried again on a fresh pool."""

    name = "process"
    job_function = staticmethod(execute_job)
    prepare_function = staticmethod(prepare_replicate)
    resource_function = staticmethod(build_resource)

    def __init__(self, processes: int | None = None, pool: Callable[..., Any] | None = None, retries: int = 1):
        self.processes, self.pool_factory, self.retries = processes, pool or ProcessPoolExecutor, retries

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True, log: Log = print) -> RunOutput:
        processes, threads = worker_split(env, graph)
        if self.processes:
            processes, threads = self.processes, max(1, (int(env.threads or 0) or processes) // self.processes)
        if processes < 2 or not can_spawn():
            return LocalExecutor().execute(graph, env, resume, log)
        local = unpicklable_components(graph)
        if local:  # e.g. a class defined in a notebook or a function: a spawned worker cannot import it
            log(f"fexbench: {', '.join(local)} cannot be sent to a worker process (not importable by name); "
                f"the graph runs in this process")
            return LocalExecutor().execute(graph, env, resume, log)
        log(f"fexbench: {processes} worker processes of {threads} thread{'s' if threads != 1 else ''}")
        profile_dir = tempfile.mkdtemp(prefix="fexbench-profile-")
        try:
            return self._run(graph, env, resume, log, processes, threads, profile_dir)
        except _NoProcesses as exc:  # nothing has run yet
            log(f"fexbench: no worker processes here ({exc}); the graph runs in this process")
            return LocalExecutor().execute(graph, env, resume, log)
        finally:
            for file in Path(profile_dir).glob("*.json"):
                try:
                    profile.merge("workers", {k: tuple(v) for k, v in json.loads(file.read_text()).items()})
                except (OSError, ValueError):
                    pass
            shutil.rmtree(profile_dir, ignore_errors=True)

    def _run(self, graph: JobGraph, env: Environment, resume: bool, log: Log, processes: int, threads: int,
             profile_dir: str) -> RunOutput:
        outcomes, factories = Outcomes(graph, env, log, summed=True), Factories(graph)
        wenv = worker_environment(env, progress=False)
        rank = longest_path_first(graph, env)
        order = {n.id: i for i, n in enumerate(graph)}
        children: dict[str, list[str]] = {n.id: [] for n in graph}
        for n in graph:
            for d in n.deps:
                children[d].append(n.id)
        waiting = {n.id: len(n.deps) for n in graph}
        ready = [(-rank[i], order[i], i) for i, w in waiting.items() if w == 0]
        heapq.heapify(ready)
        by_id = {n.id: n for n in graph}
        running: dict[Future, str] = {}

        def settle(node_id: str) -> None:
            for child in children[node_id]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (-rank[child], order[child], child))

        def work(node: Node) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
            """What to run for a node, or None when it is settled here (a failed task's nodes)."""
            if node.kind == "resource":
                return self.resource_function, (ResourceSpec(wenv, node.resource),)
            if node.task in factories.task_errors:
                outcomes.task_failed(node.task, factories.task_errors[node.task])
            if node.task in outcomes.failed:
                return None
            if node.kind == "prepare":
                return self.prepare_function, (factories.prepare(node, wenv),)
            if node.explainer in factories.explainer_errors:
                outcomes.job_failed(node, factories.explainer_errors[node.explainer])
                return None
            return self.job_function, (factories.job(graph, node, wenv, resume), *outcomes.summaries(node.task))

        def fail(node: Node, exc: BaseException) -> None:
            if node.kind == "resource":
                outcomes.resource(node, failure(node.id, exc))
            elif node.kind == "prepare":
                outcomes.prepared(node, failure(node.id, exc, tb=f"(on a worker process: {type(exc).__name__})"))
            else:
                outcomes.job_failed(node, f"{type(exc).__name__} on a worker process: {exc}")

        def done(node: Node, value: Any) -> None:
            if node.kind == "resource":
                outcomes.resource(node, value)
            elif node.kind == "prepare":
                outcomes.prepared(node, value)
            else:
                outcomes.job(node, value)

        restarts = 0

        def start_pool() -> _Pool:
            nonlocal restarts
            restarts += 1
            if restarts > 2 * len(graph) + 3:
                raise RuntimeError("the process executor's worker processes keep dying; "
                                   "`--executor local` runs the graph in this process and shows why")
            try:
                return _Pool(self.pool_factory, processes, threads, progress=False, profile_dir=profile_dir)
            except OSError as exc:
                if restarts == 1:
                    raise _NoProcesses(str(exc)) from None
                raise

        suspects: set[str] = set()  # running when a worker died: tried again one at a time
        failures: dict[str, int] = {}  # deaths of a node's worker while it ran alone
        pool = start_pool()
        try:
            while ready or running:
                broken = False
                while ready and len(running) < processes and not (suspects & set(running.values())):
                    if ready[0][2] in suspects and running:
                        break  # a suspect runs alone: wait for the others to finish
                    node = by_id[heapq.heappop(ready)[2]]
                    call = work(node)
                    if call is None:
                        settle(node.id)
                        continue
                    try:
                        running[pool.submit(call[0], *call[1])] = node.id
                    except BrokenProcessPool:  # a worker died while idle
                        heapq.heappush(ready, (-rank[node.id], order[node.id], node.id))
                        broken = True
                        break
                if running:
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                else:
                    finished = set()
                alone = len(running) == 1
                died: list[str] = []
                for future in finished:
                    node = by_id[running.pop(future)]
                    try:
                        value = future.result()
                    except BrokenProcessPool:  # a worker died (OOM killer, os._exit): the pool is gone
                        died.append(node.id)
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a hash mismatch, a factory that does not pickle
                        fail(node, exc)
                    else:
                        done(node, value)
                    suspects.discard(node.id)
                    settle(node.id)
                if died or broken:
                    died += list(running.values())  # the others went down with the pool
                    running.clear()
                    for node_id in died:
                        if alone:  # it ran alone: its own death
                            failures[node_id] = failures.get(node_id, 0) + 1
                        if failures.get(node_id, 0) > self.retries:
                            suspects.discard(node_id)
                            fail(by_id[node_id], BrokenProcessPool("its worker process died (killed, out of "
                                                                   "memory, or exited)"))
                            settle(node_id)
                        else:
                            suspects.add(node_id)
                            heapq.heappush(ready, (-rank[node_id], order[node_id], node_id))
                    pool.kill(grace_s=0.5)
                    if ready:
                        log(f"fexbench: a worker process died; {len(died)} node(s) are tried again, one at a time")
                        pool = start_pool()
        except BaseException:  # Ctrl-C (or a bug): no worker outlives the run
            pool.kill()
            raise
        pool.close()
        return outcomes.output()


# -- Ray ------------------------------------------------------------------------------------------------
def require_ray() -> Any:
    """The ray module, or one UsageError saying how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"the Ray executor needs Ray, which is not installed; install it with {RAY_INSTALL}") from None
    return ray


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
    """The graph as Ray tasks on a running cluster (`address`) or a local one started here. Every
    node is submitted at once (Ray starts one when its inputs are done) and waited for in graph
    order, so the log and the results come out in the sequential order."""

    name = "ray"
    job_function = staticmethod(execute_job)
    prepare_function = staticmethod(prepare_replicate)
    resource_function = staticmethod(build_resource)

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

    def execute(self, graph: JobGraph, env: Environment, resume: bool = True, log: Log = print) -> RunOutput:
        ray = self.ray
        self.connect()
        wenv = worker_environment(env)
        remote = {fn: ray.remote(fn) for fn in (self.resource_function, self.prepare_function, self.job_function)}
        outcomes, factories = Outcomes(graph, env, log, summed=True), Factories(graph)
        refs: dict[str, Any] = {}
        for node in graph:  # submit everything; Ray runs a node once its inputs are done
            if node.kind == "resource":
                refs[node.id] = remote[self.resource_function].options(**self._options(node, env)).remote(
                    ResourceSpec(wenv, node.resource))
            elif node.task in factories.task_errors:
                continue
            elif node.kind == "prepare":
                refs[node.id] = remote[self.prepare_function].options(**self._options(node, env)).remote(
                    factories.prepare(node, wenv))
            elif node.explainer not in factories.explainer_errors:
                inputs = [refs[d] for d in node.deps if d.startswith("prepare:")] + \
                         [refs[d] for d in node.deps if d.startswith("resource:")]
                refs[node.id] = remote[self.job_function].options(**self._options(node, env)).remote(
                    factories.job(graph, node, wenv, resume), *inputs)
        for task in graph.task_names:
            if task in factories.task_errors:
                outcomes.task_failed(task, factories.task_errors[task])
                continue
            for node in graph.of_kind("prepare"):
                if node.task == task:
                    try:
                        summary = ray.get(refs[node.id])
                    except Exception as exc:  # the worker died more often than max_retries
                        summary = failure(node.id, exc)
                    if not outcomes.prepared(node, summary):
                        break
            for node in graph.of_kind("job"):
                if node.task != task or task in outcomes.failed:
                    continue
                if node.explainer in factories.explainer_errors:
                    outcomes.job_failed(node, factories.explainer_errors[node.explainer])
                    continue
                try:
                    outcomes.job(node, ray.get(refs[node.id]))
                except Exception as exc:  # retries exhausted, or a worker-side failure before run_job
                    outcomes.job_failed(node, f"{type(exc).__name__} on a Ray worker: {exc}")
        for node in graph.of_kind("resource"):  # surface a failed build once; its jobs carry the error
            try:
                outcomes.resource(node, ray.get(refs[node.id]))
            except Exception as exc:
                outcomes.resource(node, failure(node.id, exc))
        return outcomes.output()


# -- choosing ---------------------------------------------------------------------------------------------
def make_executor(name: str = "process", address: str | None = None) -> Executor:
    """The executor a run asked for by name; a clear UsageError for an unknown one."""
    if address and name != "ray":
        raise UsageError(f"--ray-address is for --executor ray, not {name}")
    if name == "local":
        return LocalExecutor()
    if name == "process":
        return ProcessExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise UsageError(f"unknown executor {name!r}: {', '.join(EXECUTORS)}")


def apply_threads(env: Environment, source: str) -> tuple[Environment, Any]:
    """The run's thread policy, for `run`, `explain` and `reproduce` alike: choose the run's count
    (fexbench.core.threads.choose), record it in the environment and set it for this process (the
    process executor's workers then split it, worker_split). Returns (environment, choice)."""
    from fexbench.core import threads

    choice = threads.choose(env.threads or None, source)
    threads.apply(choice)
    return dataclasses.replace(env, threads=choice.threads), choice
