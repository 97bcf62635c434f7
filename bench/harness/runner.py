"""The harness: every explainer on every task, one isolated, resumable job per pair.

A job's explain step runs in a worker process that receives only the explainer's view
(fexbench.harness.worker; `Environment.explainer_isolation` or FEXBENCH_EXPLAINER_ISOLATION =
"inline" runs it in this process instead, for debugging). Either way the explanations cross one
boundary (worker.to_plain / worker.from_plain) and are checked, scored and stored as exact
built-in copies. Every executor (local, the prefetch helper, Ray) runs jobs through `run_job`.

A job's failure (an exception, a NaN weight, a wrong number of explanations) becomes an error row
with its message; the other jobs run on. A job whose result file already holds an ok result with
the same job key (task config, explainer config, seeds, data, weight and resource hashes) is not
run again. A stochastic explainer is run once per explainer seed and its metrics pooled over the
seeds; the result's per-subject numbers are those of the first seed (the run seed).
"""
from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import psutil
from tqdm.auto import tqdm

from fexbench.core import registry
from fexbench.core.cache import stable_hash, warn
from fexbench.core.seeds import derive_seed
from fexbench.core import profile
from fexbench.core.threads import record as thread_record
from fexbench.core.contract import Case, Environment, Explainer, ExplainerError, Explanation, Prepared, Task
from fexbench.core.errors import read_only_write_message
from fexbench.harness.pooling import pool
from fexbench.harness.isolation import (JobLimits, SharedInputs, enforced, explainer_view, limits, run_secret,
                                        secret_id)
from fexbench.harness import worker as workers
from fexbench.core.results import JobResult, ResultsError, package_versions, read_result, result_path, write_result

FEXBENCH_VERSION = package_versions().get("fexbench", "unknown")


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak_mb = interval, 0.0
        self._proc, self._stop = psutil.Process(), threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)


def check_explanations(explainer: str, case: Case, explanations: Any) -> list[Explanation]:
    """The contract, enforced: one Explanation per target, in order."""
    where = f"explainer {explainer!r} on subject {case.subject.name!r}"
    if not isinstance(explanations, (list, tuple)) or len(explanations) != len(case.targets):
        n = len(explanations) if isinstance(explanations, (list, tuple)) else type(explanations).__name__
        raise ExplainerError(f"{where} returned {n} explanations for {len(case.targets)} targets")
    for exp, target in zip(explanations, case.targets):
        if not isinstance(exp, Explanation):
            raise ExplainerError(f"{where} returned a {type(exp).__name__}, not an Explanation")
        if exp.target != target:
            raise ExplainerError(f"{where} answered target {exp.target.key} where {target.key} was asked")
    return list(explanations)


class UsedResources(Mapping[str, Any]):
    """A view of the shared resources that notes which ones an explainer read (name -> object)."""

    def __init__(self, resources: Mapping[str, Any], used: dict[str, Any]):
        self._resources, self.used = resources, used

    def __getitem__(self, name: str) -> Any:
        value = self._resources[name]
        self.used[name] = value
        return value

    def __iter__(self):
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)


def resource_identity(resource: Any) -> str | None:
    """What names a built resource's content: its weights hash (CLIP, captioner) or content hash (caption bank)."""
    for attr in ("weights_hash", "content_hash"):
        value = getattr(resource, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def same_weights_occurrences(prepared: Prepared) -> list[int]:
    """For each case, how many earlier cases had a subject with the same weights (0 for the first):
    the alias of an identical copy differs from its original's (fexbench.harness.isolation._alias)."""
    seen: dict[str, int] = {}
    out = []
    for case in prepared.cases:
        key = case.subject.weights_hash
        out.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return out


def explain_cases(factory: Callable[[], Explainer], prepared: Prepared, seed: int,
                  used: dict[str, Any] | None = None, registered_name: str = "",
                  cache_root: Path | None = None, bar: str | None = None,
                  secret: bytes | None = None) -> tuple[dict, float, float]:
    """Run one explainer over every case in this process (the inline mode): a fresh instance per
    subject, fit then explain, each on the isolated view of its case (fexbench.harness.isolation:
    opaque subject, read-only probe, its own cache area, ground truth for oracles only). `used`,
    when given, collects the shared resources the explainer read (name -> object). `bar`: a
    progress bar (stderr) with that description counts the subjects done. `secret`: the run
    secret aliases and context seeds derive from. The explanations cross the same boundary as a
    worker's (plain values read once, rebuilt as exact copies) before they are checked."""
    explanations, fit_s, explain_s = {}, 0.0, 0.0
    occurrences = same_weights_occurrences(prepared)
    for case, occurrence in zip(tqdm(prepared.cases, desc=bar, unit="subject", leave=False, disable=bar is None),
                                occurrences):
        explainer = factory()
        name = registered_name or explainer.name
        resources = UsedResources(case.context.resources, used) if used is not None else None
        root = cache_root if cache_root is not None else Path(case.context.cache_dir)
        subject, context = explainer_view(case, explainer, name, seed, root, resources, secret, occurrence)
        t0 = time.perf_counter()
        try:
            with profile.stage("fit"):
                explainer = explainer.fit(subject, context) or explainer
            t1 = time.perf_counter()
            with profile.stage("explain"):
                out = explainer.explain(subject, case.targets, context)
        except ValueError as exc:
            named = read_only_write_message(exc, context.probe, f"explainer {name!r}")
            if named:
                raise ExplainerError(named) from exc
            raise
        explain_s += time.perf_counter() - t1
        fit_s += t1 - t0
        try:
            plain = workers.to_plain(out)
        except TypeError as exc:
            raise ExplainerError(f"explainer {name!r} on subject {case.subject.name!r}: {exc}") from None
        explanations[case.subject.name] = checked(name, case, plain)
    return explanations, fit_s, explain_s


def checked(explainer: str, case: Case, plain: Any) -> list[Explanation]:
    """A case's explanations from their plain form: rebuilt as exact copies with the case's own
    targets (fexbench.harness.worker.from_plain), then the contract's checks."""
    return check_explanations(explainer, case, workers.from_plain(explainer, case.subject.name, case.targets, plain))


def explain_in_worker(worker: "workers.ExplainerWorker", probe: Explainer, prepared: Prepared, seed: int,
                      registered_name: str, cache_root: Path, secret: bytes,
                      bar: str | None = None) -> tuple[dict, float, float, list[str]]:
    """explain_cases in the job's worker process: the views are made here (the same aliases, seeds
    and cache areas as inline), only they travel; the replies are checked here."""
    views = []
    for case, occurrence in zip(prepared.cases, same_weights_occurrences(prepared)):
        subject, context = explainer_view(case, probe, registered_name, seed, cache_root, {}, secret, occurrence)
        views.append((subject, context, case.targets))
    with profile.stage("explain"):
        plains, fit_s, explain_s, used = worker.explain(views, bar)
    explanations = {case.subject.name: checked(registered_name, case, plain)
                    for case, plain in zip(prepared.cases, plains)}
    return explanations, fit_s, explain_s, used


EVIDENCE_KEPT = 20  # evidence lines kept per explanation in a result file (TExplain samples hundreds)


def explanation_record(explanations: Mapping[str, Sequence[Explanation]]) -> dict[str, Any]:
    """Explanations as plain JSON: subject -> per target its key, name, kind, concepts and evidence."""
    return {subject: [{"target": e.target.key, "name": e.target.name, "kind": e.target.kind, "index": e.target.index,
                       "concepts": [[w, float(v)] for w, v in e.concepts],
                       "evidence": list(e.evidence[:EVIDENCE_KEPT]), "evidence_total": len(e.evidence)}
                      for e in exps] for subject, exps in explanations.items()}


def code_versions(task: Task, explainer: Explainer, resource_names: Sequence[str] = ()) -> dict[str, Any]:
    """The behaviour versions a job's result depends on: fexbench's release, the task's and the
    explainer's `version`, and each resource provider's (a factory's `version` attribute, 1 if it
    declares none). A bump of any of them gives a new job key, so the old result is recomputed."""
    return {"fexbench": FEXBENCH_VERSION, "task": int(getattr(task, "version", 1)),
            "explainer": int(getattr(explainer, "version", 1)),
            "resources": {n: int(getattr(_resource_factory(n), "version", 1)) for n in sorted(resource_names)}}


def _resource_factory(name: str) -> Any:
    try:
        return registry.resources.get(name)
    except registry.RegistryError:
        return None


def explainer_seeds(explainer: Explainer, env: Environment) -> list[int]:
    """The context seeds an explainer is scored over: the run seed first (so one seed is exactly a
    plain run), then seeds derived from it. Deterministic explainers get the run seed only."""
    count = (env.explainer_seeds or explainer.seeds) if explainer.stochastic else 1
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"explainer {explainer.name!r}: the number of explainer seeds must be a positive "
                         f"integer, not {count!r}")
    return [env.seed] + [derive_seed(env.seed, "explainer-seed", r) for r in range(1, count)]


def run_job(task_name: str, task: Task, prepared: Prepared | Sequence[Prepared], explainer_name: str,
            factory: Callable[[], Explainer], env: Environment, resume: bool = True) -> JobResult:
    """One (task, explainer) job over every replicate of the task (`prepared`: one Prepared per
    replicate, replicate 0 first) and every explainer seed; resumed when an ok result with the same
    job key exists."""
    prepared_list = [prepared] if isinstance(prepared, Prepared) else list(prepared)
    probe = factory()
    path = result_path(env.out_dir, task_name, explainer_name)
    build_start = time.perf_counter()
    envs = [env.replicate(r) for r in range(len(prepared_list))]
    seeds, identities, setup_error = [[e.seed] for e in envs], {}, None
    try:
        seeds = [explainer_seeds(probe, e) for e in envs]
        identities = {n: resource_identity(env.resources[n]) for n in probe.resource_names()}
    except Exception as exc:  # a bad seed count or a resource that cannot be built fails this job only
        setup_error = exc
    # the declared resources are built above, before the job's clock starts: a shared resource's
    # first build (e.g. training the embedded CLIP) is its own stage, not the first job's cost
    resource_build_s = time.perf_counter() - build_start
    mode, secret = "process", b""
    try:
        mode = workers.isolation_mode(env)
        secret = run_secret(env.cache_dir)
    except Exception as exc:  # noqa: BLE001 - a bad switch or an unwritable cache fails this job only
        setup_error = setup_error or exc
    start = time.perf_counter()
    versions = code_versions(task, probe, probe.resource_names())
    key = stable_hash({"task": task_name, "task_config": task.config(), "explainer": explainer_name,
                       "explainer_config": probe.config(), "seed": env.seed,
                       "replicates": [{"seed": e.seed, "explainer_seeds": s, "hashes": dict(p.hashes)}
                                      for e, s, p in zip(envs, seeds, prepared_list)],
                       "resources": {k: dict(v) for k, v in env.resource_configs.items()},
                       "resource_identities": identities, "versions": versions,
                       "run_secret": secret_id(secret), "explainer_isolation": mode}, 24)
    if resume and path.exists():
        try:  # only a verified ok result of this very job is reused; anything else is named and recomputed
            old = read_result(path)
            if old.status == "ok" and old.job_key == key:
                if old.digest is not None:
                    return dataclasses.replace(old, resumed=True)
                warn(f"{path}: no recorded digest (written by an older fexbench); recomputing it")
        except ResultsError as exc:
            warn(f"{exc}; recomputing it")
    first = prepared_list[0]
    job_limits = JobLimits(env.job_time_limit_s, env.job_memory_limit_mb)
    unsupported = sorted({t.kind for p in prepared_list for c in p.cases for t in c.targets}
                         - set(getattr(probe, "target_kinds", ("class", "unit", "direction"))))
    common = dict(task=task_name, explainer=explainer_name, oracle=bool(probe.is_oracle), job_key=key, seed=env.seed,
                  config={"task": task.config(), "explainer": probe.config(), "explainer_seeds": seeds[0],
                          "replicates": len(prepared_list), "code_versions": versions,
                          "job_limits": enforced(job_limits, mode, env.device), "threads": thread_record(env),
                          "explainer_isolation": mode, "run_secret": secret_id(secret)},
                  hashes=dict(first.hashes), ground_truth=dict(first.ground_truth))
    if unsupported and setup_error is None:
        result = JobResult(status="skipped", error=f"explainer {explainer_name!r} explains only "
                           f"{', '.join(probe.target_kinds)} targets; task {task_name!r} also sends "
                           f"{', '.join(unsupported)} targets", **common)
        write_result(env.out_dir, result)
        return result
    if mode == "process" and setup_error is None:
        server_start = time.perf_counter()
        try:
            workers.ensure_server()  # once per process (it imports torch): not counted in the job's time
        except Exception as exc:  # noqa: BLE001 - no worker processes here: this job's error row says why
            setup_error = workers.WorkerFailure(f"explainer {explainer_name!r} on task {task_name!r}: no worker "
                                                f"process could be started ({type(exc).__name__}: {exc}); "
                                                f"{workers.ISOLATION_ENV}=inline runs explainers in this process")
        start += time.perf_counter() - server_start
    worker_added_mb = 0.0
    with PeakMemory() as mem:
        try:
            if setup_error is not None:
                raise setup_error
            used: dict[str, Any] = {}
            scored: list[list[Any]] = []
            kept: dict[str, Any] = {}
            fit_s = explain_s = 0.0
            bar = f"explain {explainer_name} on {task_name}" if env.progress else None
            if mode == "process":
                with _worker(factory, probe, explainer_name, task_name, env, job_limits) as worker:
                    for replicate, replicate_seeds_ in zip(prepared_list, seeds):
                        scored.append([])
                        for seed in replicate_seeds_:
                            explanations, fit_t, explain_t, read = explain_in_worker(
                                worker, probe, replicate, seed, explainer_name, env.cache_dir, secret, bar)
                            used.update({n: None for n in read})
                            with profile.stage("score"):
                                scored[-1].append(task.score(replicate, explanations))
                            if not kept:
                                kept = explanation_record(explanations)
                            fit_s, explain_s = fit_s + fit_t, explain_s + explain_t
                    worker_added_mb = worker.added_mb
                # the names the worker read; their identities are this process's (only declared ones
                # can be read there, and a name it reports is never built here unless declared)
                used = {n: env.resources[n] if n in probe.resource_names() else None for n in used}
            else:
                with limits(job_limits, f"explainer {explainer_name!r} on task {task_name!r}"):
                    for replicate, replicate_seeds_ in zip(prepared_list, seeds):
                        guard = SharedInputs(replicate.cases)
                        scored.append([])
                        for seed in replicate_seeds_:
                            explanations, fit_t, explain_t = explain_cases(
                                factory, replicate, seed, used, explainer_name, env.cache_dir, bar=bar, secret=secret)
                            changed = guard.changed()
                            if changed:
                                raise ExplainerError(f"explainer {explainer_name!r} modified the shared probe arrays "
                                                     f"of {', '.join(changed)}; they were restored for the other "
                                                     f"explainers")
                            with profile.stage("score"):
                                scored[-1].append(task.score(replicate, explanations))
                            if not kept:
                                kept = explanation_record(explanations)
                            fit_s, explain_s = fit_s + fit_t, explain_s + explain_t
            pooled = pool(scored, seed=env.seed)
            undeclared = sorted(set(used) - set(probe.resource_names()))
            if undeclared:  # its identity is not in the job key: a new CLIP would resume a stale result
                raise ExplainerError(f"explainer {explainer_name!r} read the shared resource(s) {', '.join(undeclared)} "
                                     f"that its resource_names() does not declare ({probe.resource_names()})")
            common["config"]["resource_build_s"] = round(resource_build_s, 3)
            # the resources this explainer read: their options (paths, names) and content identities
            common["config"]["resources"] = {n: dict(env.resource_configs.get(n, {})) for n in sorted(used)}
            used_ids = {n: resource_identity(used[n]) for n in sorted(used)}  # a bank hashes its embeddings
            common["hashes"].update({f"resource:{n}": i for n, i in used_ids.items() if i})
            replicates = tuple({"index": r, "seed": e.seed, "explainer_seeds": s, "hashes": dict(p.hashes),
                                "ground_truth": dict(p.ground_truth), "per_subject": dict(sc[0].per_subject)}
                               for r, (e, s, p, sc) in enumerate(zip(envs, seeds, prepared_list, scored))) \
                if len(prepared_list) > 1 else ()
            result = JobResult(status="ok", metrics=pooled.metrics, per_subject=dict(scored[0][0].per_subject),
                               fit_time_s=fit_s, explain_time_s=explain_s, replicates=replicates,
                               unit_values=pooled.unit_values, explanations=kept, **common)
        except KeyboardInterrupt:
            raise
        except workers.WorkerFailure as exc:  # its message names what happened in the worker
            result = JobResult(status="error", error=str(exc), **common)
        except BaseException as exc:  # one failing job never sinks the others, not even by SystemExit
            tb = traceback.format_exc(limit=-3)
            result = JobResult(status="error", error=f"{type(exc).__name__}: {exc}\n{tb}", **common)
    # the job's peak: this process's, plus what its worker added above its own start (the fork
    # server's preloaded interpreter, shared by every worker, is not the job's)
    result = dataclasses.replace(result, wall_time_s=time.perf_counter() - start,
                                 peak_rss_mb=mem.peak_mb + worker_added_mb)
    write_result(env.out_dir, result)
    return result


def _worker(factory: Callable[[], Explainer], probe: Explainer, explainer_name: str, task_name: str,
            env: Environment, job_limits: JobLimits) -> "workers.ExplainerWorker":
    """The job's worker (started on its first step): a freshly constructed explainer (sent as its
    class and state, never the factory, which may close over the job's task and Environment), the
    factories of the resources it declares, the part of the Environment those factories read, and
    the limits."""
    import torch

    resources = {}
    for name in probe.resource_names():
        factory_ = _resource_factory(name)
        if factory_ is not None:
            resources[name] = factory_
    resource_env = {"cache_dir": env.cache_dir, "device": env.device, "amp": env.amp, "batch_size": env.batch_size,
                    "threads": env.threads, "progress": False,
                    "resource_configs": {k: dict(v) for k, v in env.resource_configs.items()}}
    deadline = time.monotonic() + job_limits.time_s if job_limits.time_s else None
    memory = job_limits.memory_mb if enforced(job_limits, "process", env.device)["memory_mb"] else None
    return workers.ExplainerWorker(factory(), explainer_name, f"explainer {explainer_name!r} on task {task_name!r}",
                                   deadline=deadline, time_limit_s=job_limits.time_s, memory_mb=memory,
                                   threads=torch.get_num_threads(), resources=resources, resource_env=resource_env,
                                   progress=env.progress)


def prepare_failures(task_name: str, explainer_names: Sequence[str], exc: BaseException,
                     env: Environment) -> list[JobResult]:
    """One error row per job of a task whose preparation failed, naming the task and the cause.
    They are written (so summary.md lists them) unless an ok result of an earlier run is there:
    a failure to prepare today does not erase a good result."""
    message = (f"task {task_name!r} failed to prepare: {type(exc).__name__}: {exc}\n"
               f"{traceback.format_exc(limit=-3)}")
    rows = []
    for explainer_name in explainer_names:
        row = JobResult(task=task_name, explainer=explainer_name, oracle=False, status="error",
                        job_key="", seed=env.seed, error=message)
        path = result_path(env.out_dir, task_name, explainer_name)
        try:
            keep = path.exists() and read_result(path).status == "ok"
        except ResultsError:
            keep = False
        if not keep:
            write_result(env.out_dir, row)
        rows.append(row)
    return rows
