"""Filling the cache in worker processes: the subject zoos train on every usable CPU.

Every small model is trained with one thread (fexbench.core.threads: faster for tiny matrices, and
the weights do not depend on the machine), so one process uses one core. A zoo of independent
subjects is the natural unit of parallel work: each worker trains one subject into the shared,
content-addressed cache (whose file locks make concurrent builders safe), and the task then reads
every subject back from the cache exactly as if it had trained them itself. The weights are the
same either way: a subject's training depends only on its config and data, never on the process.

Worker processes are started with "spawn" (a forked copy of a process that already runs torch
threads can deadlock) and import fexbench afresh, which costs a few seconds; so jobs go to workers
only when at least two subjects are missing from the cache. A job that fails in a worker is left
to the caller's own sequential path, which raises the error where it can be reported.
"""
from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Sequence


def workers_for(env: Any, jobs: int) -> int:
    """Worker processes for `jobs` independent jobs: the run's thread budget (the CPUs this process
    may use), never more than the jobs."""
    from fexbench.core.threads import available_cpus

    budget = int(getattr(env, "threads", 0) or 0) or available_cpus()
    return max(1, min(budget, jobs))


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    # Ctrl-C reaches the whole process group: a worker leaves at once and silently (no traceback
    # per worker under the run's one line); the run, or the prefetch helper, reports the interrupt.
    signal.signal(signal.SIGINT, _leave)


def _leave(signum: int, frame: Any) -> None:
    """Exit now, as a kill would: cache writes are atomic and file locks die with the process. The
    finalizers run first so that the worker's own semaphores (tqdm's lock) are released and the
    resource tracker has nothing to warn about."""
    multiprocessing.util._run_finalizers(0)
    os._exit(128 + signum)


def build_in_parallel(jobs: Sequence[Callable[[], Any]], workers: int, log: Callable[[str], None] | None = None) -> int:
    """Run picklable jobs (module-level functions or functools.partial of them) in `workers`
    processes, for their side effect on the cache. Returns how many succeeded; a failure is left for
    the caller to meet again (and report) on its sequential path."""
    if workers < 2 or len(jobs) < 2:
        return 0
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file or not os.path.exists(main_file):  # stdin or an interactive session: spawn cannot start
        return 0
    if log is not None:
        log(f"training {len(jobs)} subjects in {workers} worker processes")
    done = 0
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            try:
                futures = [pool.submit(job) for job in jobs]
                for future in as_completed(futures):
                    try:
                        future.result()
                        done += 1
                    except Exception as exc:  # noqa: BLE001 - the sequential path will raise it properly
                        print(f"fexbench: a worker could not build a subject ({type(exc).__name__}: {exc}); "
                              "it is built in the main process instead", file=sys.stderr)
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)  # its workers have left (_leave)
                raise
    except (OSError, RuntimeError) as exc:  # no processes on this platform: train sequentially
        print(f"fexbench: worker processes unavailable ({exc}); training sequentially", file=sys.stderr)
    return done


def train_missing(env: Any, zoo: Any, specs: Sequence[tuple], cached: Callable[[tuple], bool]) -> None:
    """Train in worker processes each subject `zoo.subject(env, *spec)` whose files are not in the
    cache (`cached(spec)`); the zoo then reads them back with its own `subject`. `zoo` must be
    picklable (the zoos are frozen dataclasses of sizes)."""
    missing = [tuple(spec) for spec in specs if not cached(tuple(spec))]
    jobs = [functools.partial(_train_subject, zoo, str(env.cache_dir), env.seed, spec) for spec in missing]
    build_in_parallel(jobs, workers_for(env, len(jobs)),
                      log=(lambda m: print(m, file=sys.stderr)) if getattr(env, "progress", False) else None)


def _train_subject(zoo: Any, cache_dir: str, run_seed: int, spec: tuple) -> None:
    """A worker process's job: train one subject into the cache."""
    from fexbench.core.contract import Environment

    zoo.subject(Environment(cache_dir=Path(cache_dir), seed=run_seed, progress=False), *spec)
