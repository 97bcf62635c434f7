"""How many CPU threads fexbench computes with: for the whole run, and per component.

The run's count is what this process may actually use, not the host's core count: the CPUs of
its affinity mask (`os.sched_getaffinity`), further limited by a cgroup CPU quota (v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, as in a container given "2 CPUs" on a
64-core host). An explicit request wins: `fexbench run --threads N` or `[run] threads`, then the
OMP_NUM_THREADS environment variable. torch's default (one thread per host core) is the failure
this avoids: its threads spin at barriers while the OS has descheduled one of them, so a run
shared with one other busy process became 13x slower instead of 2x.

Components with tiny matrices get a fixed count, `COMPONENT_THREADS`, chosen by measurement
(docs/threads.md has the figures): on a shared 2-core machine a second thread brought little when
the machine was idle and cost 4-8x as soon as anything else ran. A fixed count also keeps trained
weights independent of the machine: the subject CNNs, the embedded CLIP, the embedded captioner
and TExplain's translators are always trained with one thread, whatever the run's count, so the
same config gives the same weights on a laptop and on a 64-core server.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterator, Mapping

# component -> fixed torch intra-op threads (see the module docstring and docs/threads.md)
COMPONENT_THREADS: Mapping[str, int] = {
    "subject-training": 1,     # also a reproducibility rule: weights must not depend on the machine
    "clip-training": 1,
    "captioner-training": 1,
    "translator-training": 1,  # TExplain's fit
    "sampling": 1,             # TExplain's batched sentence sampling
}


class ThreadsError(ValueError):
    """A bad thread count (from --threads, [run] threads or OMP_NUM_THREADS); the message names it."""


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none.

    cgroup v2: `<root>/<path>/cpu.max` holds "<quota> <period>" or "max <period>"; cgroup v1:
    `<root>/cpu/<path>/cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`. The process's own
    cgroup path comes from /proc/self/cgroup; the mount's root is tried as well (inside a
    container the process usually sees its own cgroup there).
    """
    root = Path(root)
    v2_path, v1_path = "", ""
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            if parts[0] == "0" and parts[1] == "":
                v2_path = parts[2].lstrip("/")
            elif "cpu" in parts[1].split(","):
                v1_path = parts[2].lstrip("/")
    except OSError:
        pass
    limits = []
    for folder in {root / v2_path, root}:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max" and float(period) > 0:
            limits.append(float(quota) / float(period))
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for folder in {root / controller / v1_path, root / controller}:
            try:
                quota = float((folder / "cpu.cfs_quota_us").read_text().strip())
                period = float((folder / "cpu.cfs_period_us").read_text().strip())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return min(limits) if limits else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, limited by its cgroup quota (rounded up, >= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


@dataclass(frozen=True)
class ThreadChoice:
    """The run's thread count and where it came from."""

    threads: int
    source: str  # "--threads", "[run] threads", "OMP_NUM_THREADS" or "available CPUs"


def choose(requested: int | None = None, source: str = "--threads",
           environ: Mapping[str, str] | None = None) -> ThreadChoice:
    """The run's thread count: `requested` (None or 0: not given), else OMP_NUM_THREADS, else the
    CPUs this process may use."""
    environ = os.environ if environ is None else environ
    if requested:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
            raise ThreadsError(f"{source}: the number of threads must be a positive integer, not {requested!r}")
        return ThreadChoice(requested, source)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        first = omp.split(",")[0]  # OpenMP allows a list per nesting level; the first is ours
        if not first.isdigit() or int(first) < 1:
            raise ThreadsError(f"OMP_NUM_THREADS={omp!r} is not a positive integer")
        return ThreadChoice(int(first), "OMP_NUM_THREADS")
    return ThreadChoice(available_cpus(), "available CPUs")


def apply(choice: ThreadChoice) -> None:
    """Set torch's intra-op threads and the BLAS/OpenMP pools of numpy and scipy for this process."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(choice.threads)
    threadpool_limits(limits=choice.threads)


@contextmanager
def limited(n: int | None) -> Iterator[None]:
    """Run a block with n torch intra-op threads (None or 0: unchanged), then restore the setting."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def component(name: str, override: int | None = None) -> ContextManager[None]:
    """`with threads.component("subject-training"):` runs the block with that component's fixed
    thread count (`override`, when given, wins: an explainer's explicit `torch_threads` option)."""
    if name not in COMPONENT_THREADS:
        raise KeyError(f"unknown component {name!r}; components: {', '.join(COMPONENT_THREADS)}")
    return limited(override or COMPONENT_THREADS[name])


def record(env: object) -> dict[str, object]:
    """What a result's config records about threads: the run's count (0 where the caller never
    chose one, e.g. a test's Environment) and the fixed counts of the tiny components."""
    return {"run": int(getattr(env, "threads", 0) or 0), "components": dict(COMPONENT_THREADS)}
