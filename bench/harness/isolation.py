"""What an explainer may see and do: the harness's side of "explainers cannot cheat or corrupt".

A benchmark whose numbers are published must not let a submitted explainer score by reading the
labels, nor change another method's score. So every explainer job gets a *view* of a case:

- the subject under an opaque alias, without its training card (no rho, no data description,
  no name that spells the training correlation), with its model and weights hash;
- the probe arrays as read-only views of read-only arrays (a write raises, names the explainer,
  and cannot reach the next explainer's inputs);
- a cache area of its own (`<cache>/explainers/<namespace>/`) instead of the run's cache, which
  holds the labelled world files;
- ground-truth attributes only when the explainer is a declared oracle.

By default the explainer runs in a worker process of its own (fexbench.harness.worker): the view
is all that process receives, so walking frames or the garbage collector finds no ground truth,
and nothing it changes reaches the harness. The inline mode (`explainer_isolation = "inline"`,
for debugging) runs it in the harness process, where only the view's omissions protect.

Aliases and the seeds given to explainers come from the run secret (`run_secret`): 16 random
bytes kept in `<cache>/run-secret`, created once per cache folder and never handed to a worker,
so an alias cannot be inverted from the public run seed.

Job limits (a time limit and, where the platform allows, a memory limit) stop an explainer that
hangs or allocates without bound; the job becomes an error row and the run goes on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import signal
import threading
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from fexbench.core.contract import Case, Context, Probe, Subject
from fexbench.core.seeds import derive_seed


class JobTimeout(BaseException):
    """Raised inside a job that ran past its time limit. A BaseException, so that an explainer's
    own `except Exception` cannot swallow it."""


@dataclass(frozen=True)
class JobLimits:
    """Per-job limits; None = no limit (the default of a plain run; presets turn them on)."""

    time_s: float | None = None
    memory_mb: float | None = None


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of an array that is itself made read-only, so that no view of it can be
    made writeable again (numpy refuses `setflags(write=True)` when the base is read-only)."""
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    base.flags.writeable = False
    view = array.view()
    view.flags.writeable = False
    return view


SECRET_FILE = "run-secret"


def run_secret(cache_dir: str | Path) -> bytes:
    """The run secret of a cache folder: 16 random bytes (`secrets.token_bytes`), written once as
    hex to `<cache>/run-secret` (under the folder's build lock, atomically) and read back by every
    later run, helper process and Ray worker on that cache, so aliases and explainer seeds, hence
    results, resume and reproduce on that cache. A missing or malformed file is (re)made."""
    import secrets

    from fexbench.core.cache import atomic_write_text, build_lock, warn

    path = Path(cache_dir) / SECRET_FILE

    def read() -> bytes | None:
        try:
            text = path.read_text(encoding="ascii").strip()
            return bytes.fromhex(text) if len(text) == 32 else None
        except (OSError, ValueError):
            return None

    found = read()
    if found is not None:
        return found
    with build_lock(path):
        found = read()
        if found is None:
            if path.exists():
                warn(f"{path}: not a run secret (32 hex digits); making a new one (aliases and explainer "
                     f"seeds change, so results on this cache are recomputed)")
            atomic_write_text(path, secrets.token_bytes(16).hex() + "\n")
            found = read()
    if found is None:
        raise OSError(f"{path}: could not write the run secret")
    return found


def secret_id(secret: bytes) -> str:
    """What a result records of the secret: 16 hex digits of its sha256 (says which secret, reveals
    nothing of it)."""
    return hashlib.sha256(b"fexbench-run-secret:" + secret).hexdigest()[:16]


def context_seed(seed: int, secret: bytes | None = None) -> int:
    """The seed an explainer's context gets for explainer seed `seed`: the public explainer seed
    itself, on every machine and cache, so stochastic explainers reproduce wherever the subjects
    do (a release's numbers included). It is the same for every subject and tells nothing about
    one; `secret` is accepted for the callers' sake and not used."""
    return seed


def _alias(subject: Subject, seed: int, secret: bytes | None = None, occurrence: int = 0) -> str:
    """An opaque name for a subject: stable within a run, different per explainer seed, telling
    nothing about how the subject was trained. It is derived from the subject's weights hash, which
    the explainer could compute from the model it is given anyway, never from the subject's name:
    the old alias, derive_seed('alias', name, seed), could be inverted by trying the design's
    names (cnn-rho0.95-s0, ...), and the name says how biased the subject was trained. The same on
    every machine and cache, so results reproduce; `secret` is not used. `occurrence` tells apart
    subjects with the same weights in one job (sanity-randomization's identical copy under another
    name): the k-th one gets its own alias, so an identical copy is not recognisable by its alias
    (the explainer could compare the weights itself; the alias says no more than that)."""
    if occurrence:
        return f"subject-{derive_seed('alias', subject.weights_hash, seed, occurrence, bits=32):08x}"
    return f"subject-{derive_seed('alias', subject.weights_hash, seed, bits=32):08x}"


def _namespace(explainer: Any, registered_name: str) -> str:
    name = getattr(explainer, "cache_namespace", None) or registered_name or type(explainer).__name__
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "explainer"


def explainer_view(case: Case, explainer: Any, registered_name: str, seed: int, cache_root: Path,
                   resources: Mapping[str, Any] | None = None,
                   secret: bytes | None = None, occurrence: int = 0) -> tuple[Subject, Context]:
    """The (subject, context) an explainer job receives for a case; see the module docstring.
    `secret`: the run secret, from which the alias and the context's seed are derived."""
    probe = case.context.probe
    safe_probe = Probe(read_only(probe.images), read_only(probe.features), read_only(probe.logits),
                       probe.layer, tuple(probe.ids))
    attributes = None
    if getattr(explainer, "is_oracle", False) and case.oracle_attributes is not None:
        attributes = types.MappingProxyType({k: tuple(v) for k, v in case.oracle_attributes.items()})
    context = dataclasses.replace(
        case.context, probe=safe_probe, vocabulary=tuple(case.context.vocabulary), seed=context_seed(seed, secret),
        cache_dir=Path(cache_root) / "explainers" / _namespace(explainer, registered_name),
        attributes=attributes, resources=case.context.resources if resources is None else resources)
    subject = dataclasses.replace(case.subject, name=_alias(case.subject, seed, secret, occurrence),
                                  config=types.MappingProxyType({}))
    return subject, context


def fingerprint_case(case: Case) -> str:
    """A digest of everything of a case that explainers share (probe arrays, ids, vocabulary):
    compared before and after each job, so a mutation that got through is reported, not inherited."""
    h = hashlib.sha256()
    probe = case.context.probe
    for array in (probe.images, probe.features, probe.logits):
        h.update(str((array.dtype, array.shape)).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    h.update("\n".join(probe.ids).encode())
    h.update("\n".join(case.context.vocabulary).encode())
    return h.hexdigest()


class SharedInputs:
    """Guards the arrays every explainer of a task shares: a snapshot taken once, a digest checked
    after each job, and the snapshot restored if a job got a write through, so the next explainer
    sees exactly what the first one saw."""

    def __init__(self, cases: tuple[Case, ...]):
        self._cases = cases
        self._digests = [fingerprint_case(c) for c in cases]
        self._copies = [tuple(np.array(a, copy=True) for a in (c.context.probe.images, c.context.probe.features,
                                                                c.context.probe.logits)) for c in cases]
        for case in cases:
            for array in (case.context.probe.images, case.context.probe.features, case.context.probe.logits):
                read_only(array)

    def changed(self) -> list[str]:
        """Names of the subjects whose shared inputs changed since the snapshot; restores them."""
        bad = []
        for case, digest, copies in zip(self._cases, self._digests, self._copies):
            if fingerprint_case(case) != digest:
                bad.append(case.subject.name)
                probe = case.context.probe
                for array, copy in zip((probe.images, probe.features, probe.logits), copies):
                    base = array
                    while isinstance(base.base, np.ndarray):
                        base = base.base
                    base.flags.writeable = True
                    np.copyto(array, copy)
                    read_only(array)
        return bad


@contextmanager
def limits(job_limits: JobLimits, what: str) -> Iterator[None]:
    """Enforce a job's time limit (SIGALRM: Unix main thread only) and memory limit (RLIMIT_AS
    raised by the job's budget over what the process already maps; Unix only). Where a limit
    cannot be enforced it is skipped, never silently half-applied: the caller records which."""
    stack = []
    if job_limits.time_s and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def on_alarm(signum: int, frame: Any) -> None:
            raise JobTimeout(f"{what} ran past its time limit of {job_limits.time_s:g} s and was stopped")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(job_limits.time_s))
        stack.append(lambda: (signal.setitimer(signal.ITIMER_REAL, 0), signal.signal(signal.SIGALRM, previous)))
    if job_limits.memory_mb:
        try:
            import resource

            import psutil

            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            budget = psutil.Process().memory_info().vms + int(job_limits.memory_mb * 2**20)
            if hard != resource.RLIM_INFINITY:
                budget = min(budget, hard)
            resource.setrlimit(resource.RLIMIT_AS, (budget, hard))
            stack.append(lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard)))
        except (ImportError, ValueError, OSError):
            pass
    try:
        yield
    finally:
        for undo in reversed(stack):
            undo()


def enforced(job_limits: JobLimits, mode: str = "inline", device: str = "cpu") -> dict[str, Any]:
    """Which limits this platform enforces, for the result record. In a worker process ("process")
    the harness kills the worker at the time limit from any thread, and the memory limit is a
    hard RLIMIT_AS set before the explainer loads (not on CUDA, whose driver maps more address
    space than any budget); inline, SIGALRM works in the main thread only."""
    import importlib.util
    can_memory = importlib.util.find_spec("resource") is not None
    if mode == "process":
        can_time = True
        can_memory = can_memory and not str(device).startswith("cuda")
    else:
        can_time = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    return {"time_s": job_limits.time_s if can_time else None, "memory_mb": job_limits.memory_mb if can_memory else None,
            "by": "worker process" if mode == "process" else "in-process (advisory)"}
