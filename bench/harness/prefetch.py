"""Working ahead on the second core: a helper process fills the cache with what later jobs read.

A local run is sequential: each task's preparation (data, zoo, activations, measured ground truth),
then its explainer jobs, task after task. Most of that is single-threaded (every small model trains
on one thread, fexbench.core.threads), so on a 2-core machine the second core sat idle for about
three quarters of the cold default run. The prefetcher is one extra process that, while this
process runs the first task and its jobs, prepares the later tasks' replicates and builds the
shared resources into the same content-addressed cache. When the run reaches them it finds them
built (or waits on the build's file lock, fexbench.core.cache.build_once, so nothing is ever
built twice).

Nothing about the results changes: the prefetcher calls the very `Task.prepare` and resource
builds the run would call, with the run's seed and thread count, and the run then reads the cache
exactly as on a warm re-run (a test compares every metric and job key with and without it).
A prefetch that fails is ignored: the run meets the same failure on its own path and reports it
there, named, as it always has. Only the order of work changes, and which process does it.

The helper starts after the run's first preparation, and only when that one had to compute (see
COLD_PREPARE_S): on a warm re-run there is nothing ahead to build. The run's threads are split between the two processes (threads_per_process). The order is fixed, not adaptive: the later tasks' preparations in the run's order (the run
prepares the first task itself, right away), then the shared resources (in a default run the
first task's jobs have built them long before; in a one-task run they are the only work ahead).
The prefetcher's compute seconds are added to each task's `prepare_s` in timing.json, so that
`fexbench plan` and `fexbench power` price a replicate by its compute, as with Ray.

This module imports only the standard library at its top: the helper process must set its
thread environment (one OpenMP pool that sleeps instead of spinning when descheduled) before
numpy or torch load.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any

Item = tuple  # ("prepare", task, options, replicate) or ("resource", name)
# The helper starts once the run's first preparation is done, and only if that took this long: a
# warm one reads the cache in about a second, and then a second process would only compete.
COLD_PREPARE_S = 3.0
INTERRUPT_GRACE_S = 2.0  # how long an interrupted run waits for the helper to leave before killing it


def work_ahead(graph: Any) -> list[Item]:
    """What the helper builds, in the order the run will need it (the graph's order): the shared
    resources and the preparations of every task but the first (the run prepares that one itself)."""
    first = graph.task_names[0] if graph.task_names else None
    items: list[Item] = []
    for n in graph:
        if n.kind == "resource":
            items.append(("resource", n.resource))
        elif n.kind == "prepare" and n.task != first:
            items.append(("prepare", n.task, dict(n.options), n.replicate))
    return items


def jobs_from_the_end(graph: Any, resume: bool) -> list[Item]:
    """The jobs the helper may take once its building is done, last first: the run walks the jobs
    forward and the helper backward, each claiming a job before computing it, until they meet."""
    return [("job", n.id, n.task, dict(graph.node(n.deps[0]).options), n.explainer, dict(n.options), resume)
            for n in reversed(graph.of_kind("job"))]


class Claims:
    """Which process computes each job of the run: a small JSON map in the run's coordination folder,
    read and written under a file lock. A job is claimed once, by the first process to ask."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, "claims.json")
        self.lock_path = os.path.join(folder, "claims.lock")

    def claim(self, job: str, who: str) -> bool:
        import json

        from filelock import FileLock

        with FileLock(self.lock_path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    owners = json.load(f)
            except FileNotFoundError:
                owners = {}
            if job in owners:
                return owners[job] == who
            owners[job] = who
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(owners, f)
            os.replace(tmp, self.path)
            return True


def threads_per_process(env: Any, prefetch: bool) -> int:
    """Compute threads of each process. With the helper on, the run's threads are split between the
    run and its helper (2 CPUs: one each): two processes that each ran every CPU's worth of OpenMP
    threads would make each other's parallel regions wait for descheduled threads, the collapse
    the thread policy exists to avoid (measured here: FALCON's explain went from 3 s to 36 s).
    The numbers do not depend on it: the subject CNNs and CLIP give bit-identical outputs at 1 and
    2 threads (tests/test_prefetch.py), and a cold default run with the helper reproduced the
    published board exactly."""
    from fexbench.core.threads import available_cpus

    total = int(getattr(env, "threads", 0) or 0) or available_cpus()
    return max(1, total // 2) if prefetch and can_prefetch(env) else total


def apply_threads(env: Any, prefetch: bool, source: str) -> tuple[Any, Any, int]:
    """The run's thread policy, for `run` and `reproduce` alike: choose the run's count
    (fexbench.core.threads.choose), record it in the environment, and set this process's share of
    it. Returns (environment, choice, threads of this process)."""
    import dataclasses

    from fexbench.core import threads

    choice = threads.choose(env.threads or None, source)
    env = dataclasses.replace(env, threads=choice.threads)
    own = threads_per_process(env, prefetch)
    threads.apply(threads.ThreadChoice(own, choice.source))
    return env, choice, own


def can_prefetch(env: Any) -> bool:
    """Worth a second process: at least two usable CPUs (or threads) and a main module that a
    spawned process can start from (not an interactive session or stdin)."""
    from fexbench.core.threads import available_cpus

    budget = int(getattr(env, "threads", 0) or 0) or available_cpus()
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return available_cpus() >= 2 and budget >= 2 and bool(main_file) and os.path.exists(main_file)


def _environment_fields(env: Any) -> dict[str, Any]:
    """The Environment as plain values (its read-only mappings do not pickle), progress bars off."""
    values = {f.name: getattr(env, f.name) for f in fields(env)}
    values["resource_configs"] = {k: dict(v) for k, v in env.resource_configs.items()}
    values["progress"] = False
    return values


def _helper(items: list[Item], jobs: list[Item], coordination: str, env_fields: dict[str, Any], parent: int,
            done: Any) -> None:
    """The helper process: build each item into the cache, reporting (item index, seconds, ok); then
    take jobs from the end, reporting ("job", id, status)."""
    threads = max(1, int(env_fields.get("threads") or 2) // 2)  # its half of the run's threads
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # two processes share the cores: no spinning
    try:
        from fexbench.core import profile, registry
        from fexbench.core import threads as thread_policy
        from fexbench.core.contract import Environment

        thread_policy.apply(thread_policy.ThreadChoice(threads, "prefetch"))
        env = Environment(**env_fields)
        for index, item in enumerate(items):
            if os.getppid() != parent:  # the run is gone (killed): stop working for it
                return
            start, ok = time.perf_counter(), True
            try:
                if item[0] == "prepare":
                    _, task, options, replicate = item
                    with profile.stage(f"prepare {task}"):
                        registry.tasks.get(task)(**options).prepare(env.replicate(replicate))
                else:
                    env.resources[item[1]]  # the resource's build is its own stage
            except Exception:  # noqa: BLE001 - the run meets it on its own path and reports it there
                ok = False
            done.put((index, time.perf_counter() - start, ok))
        _take_jobs(jobs, Claims(coordination), env, parent, done)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the run reports it
        return
    finally:
        try:
            from fexbench.core import profile

            done.put(("profile", profile.totals()))
        except Exception:  # noqa: BLE001 - a missing table is no reason to lose the run
            pass
        done.put(None)


def _take_jobs(jobs: list[Item], claims: Claims, env: Any, parent: int, done: Any) -> None:
    """Compute jobs from the end until the run has claimed the next one. A job the helper cannot
    set up (an explainer or task registered only in the run's process, say) is left to the run,
    and so is every job before it."""
    from fexbench.core import profile, registry
    from fexbench.harness.runner import run_job

    prepared: dict[str, tuple[Any, list[Any]]] = {}
    for _, job_id, task_name, task_options, explainer, options, resume in jobs:
        if os.getppid() != parent:
            return
        try:
            cls = registry.explainers.get(explainer)
            task_cls = registry.tasks.get(task_name)
        except Exception:  # noqa: BLE001
            return
        if not claims.claim(job_id, "helper"):
            return  # the run got here first: everything before is the run's
        try:
            if task_name not in prepared:
                task = task_cls(**task_options)
                prepared[task_name] = (task, [task.prepare(env.replicate(r)) for r in range(env.replicates_for(task_name))])
            task, replicates = prepared[task_name]
            with profile.stage(f"{explainer} on {task_name}"):
                result = run_job(task_name, task, replicates, explainer, lambda: cls(**options), env, resume)
            done.put(("job", job_id, result.status))
        except Exception:  # noqa: BLE001 - the run computes this job itself and reports any failure
            done.put(("job", job_id, "failed"))


@dataclass
class Prefetcher:
    """A started helper process, and what it has reported."""

    items: list[Item]
    process: Any = None
    queue: Any = None
    coordination: str = ""
    seconds: dict[int, tuple[float, bool]] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> status, for the jobs the helper computed

    @classmethod
    def start(cls, graph: Any, env: Any, resume: bool = True, share_jobs: bool = True) -> "Prefetcher | None":
        """Start the helper, or None when there is nothing ahead or no second CPU."""
        import tempfile

        items = work_ahead(graph)
        jobs = jobs_from_the_end(graph, resume) if share_jobs else []
        if not (items or jobs) or not can_prefetch(env):
            return None
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs torch threads
        try:
            coordination = tempfile.mkdtemp(prefix="fexbench-run-")
            queue = ctx.SimpleQueue()
            process = ctx.Process(target=_helper, args=(items, jobs, coordination, _environment_fields(env),
                                                        os.getpid(), queue), name="fexbench-prefetch")
            process.start()
        except Exception as exc:  # noqa: BLE001 - no helper (no processes here, say): the run does it all itself
            print(f"fexbench: no prefetch process ({exc}); running sequentially", file=sys.stderr)
            return None
        return cls(items, process, queue, coordination)

    def _drain(self) -> None:
        while not self.queue.empty():
            message = self.queue.get()
            if message is None:
                continue
            if message[0] == "job":
                self.jobs[message[1]] = message[2]
            elif message[0] == "profile":
                from fexbench.core import profile

                profile.merge("helper", message[1])
            else:
                index, seconds, ok = message
                self.seconds[index] = (seconds, ok)

    def _kill_tree(self) -> None:
        """The helper and every process it started (its zoo workers), so that none is orphaned."""
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for proc in [*children]:
            try:
                proc.kill()
            except psutil.Error:
                pass
        self.process.kill()
        self.process.join(timeout=10)

    def claim(self, job_id: str) -> bool:
        """Claim a job for the run; False when the helper has it (then `computed` gives its result)."""
        return Claims(self.coordination).claim(job_id, "run")

    def computed(self, job_id: str, path: Any) -> Any:
        """The JobResult the helper computed for a job it claimed, waiting for it; None when the helper
        failed or died first (the run then computes the job itself)."""
        from fexbench.core.results import ResultsError, read_result

        while job_id not in self.jobs:
            self._drain()
            if job_id in self.jobs:
                break
            if not self.process.is_alive():
                self._drain()
                if job_id not in self.jobs:
                    return None
                break
            time.sleep(0.1)
        if self.jobs[job_id] == "failed":
            return None
        try:
            return read_result(path)
        except (OSError, ResultsError):
            return None

    def stop(self, interrupted: bool = False) -> dict[str, float]:
        """End the helper (it has usually finished: its work is a subset of the run's) and return
        its compute seconds per task. A helper still busy (the run ended early, or was interrupted)
        is killed with its own worker processes, and its last messages are not read (one may be
        torn); the cache is safe, every write being atomic and locked."""
        import shutil

        # Interrupted, the helper has had Ctrl-C too (same process group) and leaves by itself in a
        # moment, releasing what it holds (no "leaked semaphore" warnings); otherwise it is killed.
        self.process.join(timeout=INTERRUPT_GRACE_S if interrupted else 0.5)
        if self.process.is_alive():
            self._kill_tree()
        else:
            self._drain()
        shutil.rmtree(self.coordination, ignore_errors=True)
        per_task: dict[str, float] = {}
        for index, (seconds, _ok) in self.seconds.items():
            item = self.items[index]
            if item[0] == "prepare":
                per_task[item[1]] = per_task.get(item[1], 0.0) + seconds
        return per_task
