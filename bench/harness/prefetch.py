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
COLD_PREPARE_S): on a warm re-run there is nothing ahead to build. The order is fixed, not adaptive: the later tasks' preparations in the run's order (the run
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


def work_ahead(graph: Any) -> list[Item]:
    """What the helper builds, in order: every task's preparations but the first task's, then the
    shared resources."""
    first = graph.task_names[0] if graph.task_names else None
    items: list[Item] = [("prepare", n.task, dict(n.options), n.replicate)
                         for n in graph.of_kind("prepare") if n.task != first]
    items += [("resource", n.resource) for n in graph.of_kind("resource")]
    return items


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


def _helper(items: list[Item], env_fields: dict[str, Any], parent: int, done: Any) -> None:
    """The helper process: build each item into the cache, report (item index, seconds, ok)."""
    threads = max(1, int(env_fields.get("threads") or 1))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # two processes share the cores: no spinning
    try:
        from fexbench.core import registry
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
                    registry.tasks.get(task)(**options).prepare(env.replicate(replicate))
                else:
                    env.resources[item[1]]
            except Exception:  # noqa: BLE001 - the run meets it on its own path and reports it there
                ok = False
            done.put((index, time.perf_counter() - start, ok))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the run reports it
        return
    finally:
        done.put(None)


@dataclass
class Prefetcher:
    """A started helper process, and what it has reported."""

    items: list[Item]
    process: Any = None
    queue: Any = None
    seconds: dict[int, tuple[float, bool]] = field(default_factory=dict)

    @classmethod
    def start(cls, graph: Any, env: Any) -> "Prefetcher | None":
        """Start the helper, or None when there is nothing ahead or no second CPU."""
        items = work_ahead(graph)
        if not items or not can_prefetch(env):
            return None
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs torch threads
        try:
            queue = ctx.SimpleQueue()
            process = ctx.Process(target=_helper, args=(items, _environment_fields(env), os.getpid(), queue),
                                  name="fexbench-prefetch")
            process.start()
        except Exception as exc:  # noqa: BLE001 - no helper (no processes here, say): the run does it all itself
            print(f"fexbench: no prefetch process ({exc}); running sequentially", file=sys.stderr)
            return None
        return cls(items, process, queue)

    def _drain(self) -> None:
        while not self.queue.empty():
            message = self.queue.get()
            if message is not None:
                index, seconds, ok = message
                self.seconds[index] = (seconds, ok)

    def stop(self) -> dict[str, float]:
        """End the helper (it has usually finished: its work is a subset of the run's) and return
        its compute seconds per task. A helper still busy (the run ended early, or was
        interrupted) is terminated; the cache is safe, every write being atomic and locked."""
        self.process.join(timeout=0.5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=10)
        self._drain()
        per_task: dict[str, float] = {}
        for index, (seconds, _ok) in self.seconds.items():
            item = self.items[index]
            if item[0] == "prepare":
                per_task[item[1]] = per_task.get(item[1], 0.0) + seconds
        return per_task
