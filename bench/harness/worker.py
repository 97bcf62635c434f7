"""Explainers run in a worker process that holds nothing else (issue #29, item 2).

The harness process keeps the ground truth, the scoring, every other explainer's arrays and the
results folder. A job's explain step runs in a child process that receives only the explainer's
view of each case: the explainer (a freshly constructed instance: its class, by reference when
it is importable, and its options; a pristine copy is unpickled for every subject), the subject under
its opaque alias with its model, the probe arrays (read-only, backed by immutable bytes), the
vocabulary, the explainer's seed, its own cache area and the shared resources it declared (their
factories, so that it builds them from the shared cache by name). It never receives a `Prepared`,
a `Case`, ground truth (unless the explainer is a declared oracle: then its attributes, as
in-process), the run's secret, the Environment of the run or the results folder.

Processes. A multiprocessing "forkserver" context whose server is started once per harness
process (`ensure_server`, before a job's clock starts) with only numpy, torch, cloudpickle and
fexbench's contract preloaded: each child is forked from that clean server, so it starts in a
fraction of a second and never inherits the harness's memory. Where forkserver is missing the
"spawn" context is used (each child then imports torch itself). Children never re-run the
harness's main script (`__mp_main__`): the preparation data of fexbench's worker processes leaves
the main module out, so an unguarded `python script.py` run is safe.

Limits, enforced from outside. The child makes itself a process-group leader, gives up
CAP_SYS_RESOURCE where it holds it, and sets RLIMIT_AS to (limit, limit), hard equal to soft,
before it loads the explainer's code when the job has a memory limit: the explainer cannot raise
it again. The parent waits with the job's deadline and kills the child's process group (SIGKILL)
when it passes; every wait of the parent (sending, receiving, the child's exit) is bounded by it,
so a child that stalls half way through a message cannot hold the run either. A child that dies,
exits (`os._exit(0)` included) or sends nothing is a `WorkerFailure` naming what happened; the
harness makes it the job's error row and the run goes on.

Boundary. The child converts what the explainer returned into plain built-in values (exact
`str`, `float`, `list`, `dict`; `to_plain`), reading tuples, lists, strings and numbers through
their base types so that an overridden `__iter__`, `__eq__`, `__hash__` or `__float__` is never
consulted, and sends them as JSON: nothing the child sends is unpickled by the harness. The
harness rebuilds Explanations from that JSON with its own Target objects (`from_plain`, exact
types checked again) before anything is checked, scored or stored. The inline path
(`explainer_isolation = "inline"`, for debugging) converts through the same two functions.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from multiprocessing import spawn as _mp_spawn
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

WORKER_NAME = "fexbench-explainer-worker"
ISOLATION_ENV = "FEXBENCH_EXPLAINER_ISOLATION"
MODES = ("process", "inline")
# what the fork server imports once: nothing that holds data, only code the children need
PRELOAD = ["numpy", "torch", "cloudpickle", "tqdm.auto", "fexbench.core.contract", "fexbench.core.seeds",
           "fexbench.models.subjects", "fexbench.harness.worker"]
MAX_REPLY_BYTES = 256 * 2**20  # a reply larger than this is refused (the results reader's bound is 64 MiB)
_HEADER = struct.Struct("!Q")
_CAP_SYS_RESOURCE = 24


class WorkerFailure(Exception):
    """The worker could not deliver explanations: killed at the time limit, out of memory, exited,
    died, sent nothing or too much, or the explainer raised. The message is the job's error row."""


def isolation_mode(env: Any) -> str:
    """"process" (the default) or "inline": FEXBENCH_EXPLAINER_ISOLATION wins over the
    Environment's `explainer_isolation`."""
    mode = os.environ.get(ISOLATION_ENV, "").strip() or getattr(env, "explainer_isolation", "process") or "process"
    if mode not in MODES:
        raise ValueError(f"explainer isolation must be one of {', '.join(MODES)}, not {mode!r} "
                         f"(from {ISOLATION_ENV} or Environment.explainer_isolation)")
    return mode


# -- processes ---------------------------------------------------------------------------------------
_real_preparation_data = _mp_spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """multiprocessing's preparation data, without the main module for fexbench's workers: a child
    must not import the harness's `__main__` script (an unguarded script would run the whole
    benchmark again in every worker). Everything else (sys.path, cwd) is kept."""
    data = _real_preparation_data(name)
    if name == WORKER_NAME:
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


if _mp_spawn.get_preparation_data is _real_preparation_data:
    _mp_spawn.get_preparation_data = _preparation_data

_CONTEXT: Any = None


def context() -> Any:
    """The multiprocessing context of explainer workers: forkserver (preloaded) or spawn."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
        else:
            ctx = multiprocessing.get_context("spawn")
        _CONTEXT = ctx
    return _CONTEXT


_SERVER_READY = False


def _ping() -> None:
    """A worker that does nothing: the fork server has finished its preload once it ran."""


def ensure_server() -> None:
    """Start the fork server now and wait until it has imported its preload (once per process: it
    imports torch), so that no job's clock pays for it. Idempotent and cheap once it runs."""
    global _SERVER_READY
    ctx = context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    forkserver.ensure_running()
    if not _SERVER_READY:
        probe = ctx.Process(target=_ping, name=WORKER_NAME, daemon=False)
        probe.start()
        probe.join()
        _SERVER_READY = True


def _kill_group(pid: int | None) -> None:
    if not pid:
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class ExplainerWorker:
    """One job's worker process (parent side). `explain` sends one (replicate, seed) step and
    returns the plain explanations per case; the deadline (monotonic seconds) covers the whole job."""

    def __init__(self, explainer: Any, name: str, what: str, *, deadline: float | None, time_limit_s: float | None,
                 memory_mb: float | None, threads: int, resources: Mapping[str, Any], resource_env: Mapping[str, Any],
                 progress: bool = False):
        self.name, self.what = name, what
        self.deadline, self.time_limit_s, self.memory_mb = deadline, time_limit_s, memory_mb
        self.proc: Any = None
        self.sock: socket.socket | None = None
        self.added_mb = 0.0
        self._sent_arrays: dict[int, tuple[Any, int]] = {}
        self._sent_models: dict[int, tuple[Any, int]] = {}
        self._explainer, self._threads, self._progress = explainer, threads, progress
        self._resources, self._resource_env = dict(resources), dict(resource_env)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "ExplainerWorker":
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close(polite=kind is None)  # interrupted or failed: no goodbye, SIGKILL at once

    def _start(self) -> None:
        import cloudpickle

        try:
            # a freshly constructed instance (its class by reference, or by value when it is not
            # importable, and its options): the worker unpickles a pristine copy for every subject
            spec = cloudpickle.dumps({"explainer": cloudpickle.dumps(self._explainer, protocol=pickle.HIGHEST_PROTOCOL),
                                      "resources": self._resources, "resource_env": self._resource_env,
                                      "name": self.name, "progress": self._progress}, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - named in the row
            raise WorkerFailure(f"{self.what}: the explainer could not be sent to its worker process "
                                f"({type(exc).__name__}: {exc})") from None
        parent, child = socket.socketpair()
        ctx = context()
        self.proc = ctx.Process(target=_child_main, name=WORKER_NAME,
                                args=(child, self.memory_mb, self._threads), daemon=False)
        try:
            self.proc.start()
        finally:
            child.close()
        self.sock = parent
        self._send(spec)
        reply = self._receive()
        if reply.get("ok") is not True:
            error = reply.get("error")
            raise WorkerFailure(error if type(error) is str and error else f"ExplainerError: {self.what}: its worker "
                                f"process could not load the explainer")

    def close(self, polite: bool = True) -> None:
        """Stop the worker: a polite "stop" (when `polite`), then SIGKILL to its process group
        whatever it did."""
        if self.proc is None:
            return
        try:
            if polite and self.sock is not None and self.proc.is_alive():
                try:
                    self.sock.settimeout(1.0)
                    self.sock.sendall(_HEADER.pack(0))  # an empty frame: stop
                except OSError:
                    pass
                self.proc.join(2.0)
        finally:
            _kill_group(self.proc.pid)
            self.proc.join(5.0)
            if self.sock is not None:
                self.sock.close()
            self.sock = None
            try:
                self.proc.close()
            except ValueError:  # still running after SIGKILL: left to the OS
                pass
            self.proc = None

    # -- failures ----------------------------------------------------------------------------------
    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _timed_out(self) -> WorkerFailure:
        pid = self.proc.pid if self.proc is not None else None
        _kill_group(pid)
        return WorkerFailure(f"JobTimeout: {self.what} ran past its time limit of {self.time_limit_s:g} s and was "
                             f"stopped: its worker process was killed (SIGKILL) at the limit")

    def _gone(self, during: str) -> WorkerFailure:
        proc = self.proc
        code = None
        if proc is not None:
            proc.join(2.0)
            code = proc.exitcode
            if code is None:  # alive but its end of the socket is closed: kill it, then say so
                _kill_group(proc.pid)
                proc.join(5.0)
                return WorkerFailure(f"WorkerExited: {self.what}: its worker process closed its channel {during}; "
                                     f"it was killed")
        if code is not None and code < 0:
            sig = _signal_name(-code)
            hint = (" (out of memory: the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else "")
            return WorkerFailure(f"WorkerDied: {self.what}: its worker process was killed by {sig} {during}{hint}")
        return WorkerFailure(f"WorkerExited: {self.what}: its worker process exited with code {code} {during}")

    # -- framing -----------------------------------------------------------------------------------
    def _send(self, payload: bytes) -> None:
        assert self.sock is not None
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            raise self._timed_out()
        self.sock.settimeout(remaining)
        try:
            self.sock.sendall(_HEADER.pack(len(payload)))
            self.sock.sendall(payload)
        except socket.timeout:
            raise self._timed_out() from None
        except OSError:
            raise self._gone("before it took its inputs") from None

    def _read_exact(self, n: int, during: str) -> bytearray:
        from multiprocessing.connection import wait

        assert self.sock is not None and self.proc is not None
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise self._timed_out()
            ready = wait([self.sock, self.proc.sentinel], remaining)
            if not ready:
                raise self._timed_out()
            self.sock.settimeout(0.0)
            try:
                k = self.sock.recv_into(view[got:], min(n - got, 1 << 22))
            except (BlockingIOError, InterruptedError):
                if self.proc.sentinel in ready:  # exited, nothing left to read
                    raise self._gone(during) from None
                continue
            except OSError:
                raise self._gone(during) from None
            if k == 0:
                raise self._gone(during)
            got += k
        return buf

    def _receive(self) -> dict[str, Any]:
        during = "before it sent its explanations"
        (n,) = _HEADER.unpack(self._read_exact(_HEADER.size, during))
        if n > MAX_REPLY_BYTES:
            _kill_group(self.proc.pid if self.proc else None)
            raise WorkerFailure(f"ExplainerError: {self.what}: its worker process sent a {n}-byte reply, over the "
                                f"limit of {MAX_REPLY_BYTES} bytes; it was killed")
        body = self._read_exact(n, during)
        try:
            reply = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise WorkerFailure(f"ExplainerError: {self.what}: its worker process sent something that is not "
                                f"JSON ({exc})") from None
        if type(reply) is not dict:
            raise WorkerFailure(f"ExplainerError: {self.what}: its worker process sent a {type(reply).__name__}")
        return reply

    # -- one step ----------------------------------------------------------------------------------
    def _array_token(self, array: np.ndarray, new: dict[int, Any]) -> int:
        key = id(array)
        if key not in self._sent_arrays:
            token = len(self._sent_arrays) + len(self._sent_models)
            self._sent_arrays[key] = (array, token)  # kept referenced: the id stays this array's
            a = np.ascontiguousarray(array)
            new[token] = (a.dtype.str, a.shape, a.tobytes())
        return self._sent_arrays[key][1]

    def _model_token(self, model: Any, new: dict[int, Any]) -> int:
        import cloudpickle

        key = id(model)
        if key not in self._sent_models:
            token = len(self._sent_arrays) + len(self._sent_models)
            try:
                data = cloudpickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001
                raise WorkerFailure(f"{self.what}: a subject model ({type(model).__name__}) could not be sent to the "
                                    f"worker process ({type(exc).__name__}: {exc}); run with "
                                    f"{ISOLATION_ENV}=inline to debug") from None
            self._sent_models[key] = (model, token)
            new[token] = data
        return self._sent_models[key][1]

    def explain(self, views: Sequence[tuple[Any, Any, Sequence[Any]]], bar: str | None = None
                ) -> tuple[list[Any], float, float, list[str]]:
        """Explain each (subject view, context view, targets) in the worker: (the plain explanations
        per case, fit seconds, explain seconds, the resources it read)."""
        if self.proc is None:
            self._start()
        arrays: dict[int, Any] = {}
        models: dict[int, Any] = {}
        cases = []
        for subject, context, targets in views:
            probe = context.probe
            cases.append({
                "alias": subject.name, "class_names": tuple(subject.class_names),
                "weights_hash": subject.weights_hash, "model": self._model_token(subject.model, models),
                "targets": tuple(targets),
                "probe": {"images": self._array_token(probe.images, arrays),
                          "features": self._array_token(probe.features, arrays),
                          "logits": self._array_token(probe.logits, arrays),
                          "layer": probe.layer, "ids": tuple(probe.ids)},
                "vocabulary": tuple(context.vocabulary), "seed": int(context.seed), "device": context.device,
                "cache_dir": str(context.cache_dir),
                "attributes": None if context.attributes is None else {k: tuple(v) for k, v in
                                                                       context.attributes.items()}})
        payload = pickle.dumps({"cases": cases, "arrays": arrays, "models": models, "bar": bar},
                               protocol=pickle.HIGHEST_PROTOCOL)
        self._send(payload)
        reply = self._receive()
        added = reply.get("added_mb")
        if type(added) in (int, float) and math.isfinite(added):
            self.added_mb = max(self.added_mb, float(added))
        if reply.get("ok") is not True:
            error = reply.get("error")
            raise WorkerFailure(error if type(error) is str and error else
                                f"ExplainerError: {self.what}: its worker process reported a failure without a message")
        results, used = reply.get("results"), reply.get("used", [])
        if type(results) is not list or len(results) != len(views):
            raise WorkerFailure(f"ExplainerError: {self.what}: its worker process sent "
                                f"{len(results) if type(results) is list else type(results).__name__} results for "
                                f"{len(views)} subjects")
        fit_s, explain_s = reply.get("fit_s"), reply.get("explain_s")
        fit_s = float(fit_s) if type(fit_s) in (int, float) else 0.0
        explain_s = float(explain_s) if type(explain_s) in (int, float) else 0.0
        used = [u for u in used if type(u) is str] if type(used) is list else []
        return results, fit_s, explain_s, used


# -- the boundary: plain values out of the explainer, Explanations back in the harness ----------------
_NUMPY_NUMBERS = (np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int16, np.int32, np.int64,
                  np.uint8, np.uint16, np.uint32, np.uint64)


def _raw_items(value: Any, what: str) -> list[Any]:
    """The items of a tuple or list as stored, never through an overridden __iter__/__getitem__."""
    if isinstance(value, tuple):
        return [tuple.__getitem__(value, i) for i in range(tuple.__len__(value))]
    if isinstance(value, list):
        return [list.__getitem__(value, i) for i in range(list.__len__(value))]
    raise TypeError(f"{what} is a {type(value).__name__}, not a tuple or list")


def _raw_str(value: Any, what: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # an exact copy of the characters it holds
    raise TypeError(f"{what} is a {type(value).__name__}, not a string")


def _raw_float(value: Any, what: str) -> float:
    kind = type(value)
    if kind is float:
        return value
    if isinstance(value, float):
        return float.__float__(value)  # the stored double, not an overridden __float__
    if isinstance(value, int):  # bool included, as the contract's isinstance check allows it
        return int.__float__(value)
    if kind in _NUMPY_NUMBERS:
        return float(value)
    raise TypeError(f"{what} is a {kind.__name__}, not a number")


def to_plain(returned: Any) -> dict[str, Any]:
    """What an explainer returned, as plain JSON values read once: {"items": [...]} with per item
    {"target": key, "concepts": [[word, weight], ...], "evidence": [...]} or {"not": type name};
    {"type": name} when the return value is not a list or tuple. Raises TypeError on a field of
    the wrong type (the row names it)."""
    from fexbench.core.contract import Explanation, Target

    if not isinstance(returned, (list, tuple)):
        return {"type": type(returned).__name__}
    items = []
    for i, exp in enumerate(_raw_items(returned, "the returned explanations")):
        if not isinstance(exp, Explanation):
            items.append({"not": type(exp).__name__})
            continue
        target = object.__getattribute__(exp, "target")
        key = _raw_str(Target.key.fget(target), f"explanation {i}'s target key") if isinstance(target, Target) \
            else f"<a {type(target).__name__}>"
        concepts = []
        for j, pair in enumerate(_raw_items(object.__getattribute__(exp, "concepts"), f"explanation {i}'s concepts")):
            parts = _raw_items(pair, f"explanation {i}'s concept {j}")
            if len(parts) != 2:
                raise TypeError(f"explanation {i}'s concept {j} is not a (word, weight) pair")
            concepts.append([_raw_str(parts[0], f"explanation {i}'s concept {j} word"),
                             _raw_float(parts[1], f"explanation {i}'s concept {j} weight")])
        evidence = [_raw_str(e, f"explanation {i}'s evidence {k}")
                    for k, e in enumerate(_raw_items(object.__getattribute__(exp, "evidence"),
                                                     f"explanation {i}'s evidence"))]
        items.append({"target": key, "concepts": concepts, "evidence": evidence})
    return {"items": items}


def from_plain(explainer: str, subject_name: str, targets: Sequence[Any], plain: Any) -> list[Any]:
    """Explanations rebuilt by the harness from plain values (exact types checked again), with the
    harness's own Target objects: the contract's checks (one per target, in order; finite,
    non-negative weights) apply to these exact copies, which are then scored and stored."""
    from fexbench.core.contract import Explanation, ExplainerError

    where = f"explainer {explainer!r} on subject {subject_name!r}"
    if type(plain) is not dict:
        raise ExplainerError(f"{where}: the worker sent a {type(plain).__name__} for its explanations")
    if "items" not in plain:
        kind = plain.get("type")
        raise ExplainerError(f"{where} returned {kind if type(kind) is str else '?'} explanations for "
                             f"{len(targets)} targets")
    items = plain["items"]
    if type(items) is not list or len(items) != len(targets):
        n = len(items) if type(items) is list else type(items).__name__
        raise ExplainerError(f"{where} returned {n} explanations for {len(targets)} targets")
    out = []
    for item, target in zip(items, targets):
        if type(item) is not dict or "not" in item:
            kind = item.get("not") if type(item) is dict else type(item).__name__
            raise ExplainerError(f"{where} returned a {kind}, not an Explanation")
        key, concepts, evidence = item.get("target"), item.get("concepts"), item.get("evidence", [])
        if type(key) is not str or key != target.key:
            raise ExplainerError(f"{where} answered target {key} where {target.key} was asked")
        if type(concepts) is not list or type(evidence) is not list:
            raise ExplainerError(f"{where}: concepts and evidence must be lists")
        pairs = []
        for pair in concepts:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str or type(pair[1]) not in (float, int):
                raise ExplainerError(f"{where}: a concept is not a (word, weight) pair of a string and a number")
            pairs.append((pair[0], float(pair[1])))
        if any(type(e) is not str for e in evidence):
            raise ExplainerError(f"{where}: evidence must be strings")
        out.append(Explanation(target, tuple(pairs), tuple(evidence)))  # validates weights and words
    return out


# -- the child ---------------------------------------------------------------------------------------
def _drop_cap_sys_resource() -> None:
    """Give up CAP_SYS_RESOURCE (which would let even a hard RLIMIT_AS be raised) where this process
    holds it, as root does. Best effort: Linux only, via capget/capset."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)

        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        if libc.capget(ctypes.byref(header), data) != 0:
            return
        bit = 1 << _CAP_SYS_RESOURCE
        if not (data[0].effective | data[0].permitted) & bit:
            return
        for field in ("effective", "permitted", "inheritable"):
            setattr(data[0], field, getattr(data[0], field) & ~bit)
        libc.capset(ctypes.byref(header), data)
        libc.prctl(24, _CAP_SYS_RESOURCE, 0, 0, 0)  # PR_CAPBSET_DROP (needs CAP_SETPCAP; ignored if not held)
    except Exception:  # noqa: BLE001 - best effort
        pass


def _set_memory_limit(memory_mb: float) -> None:
    """RLIMIT_AS = what this process maps now + the job's budget, hard equal to soft."""
    import resource

    with open("/proc/self/statm") as f:
        vms = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = vms + int(memory_mb * 2**20)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _recv_frame(sock: socket.socket) -> bytes | None:
    header = _recv_exact(sock, _HEADER.size)
    (n,) = _HEADER.unpack(header)
    return None if n == 0 else _recv_exact(sock, n)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("the harness closed the channel")
        got += k
    return bytes(buf)


def _send_json(sock: socket.socket, obj: Any) -> None:
    body = json.dumps(obj).encode("utf-8")
    sock.sendall(_HEADER.pack(len(body)) + body)


class _ChildResources(Mapping[str, Any]):
    """The declared shared resources, built in the worker on first use from the harness's factories
    and the shared cache; reading an undeclared one is the explainer's error."""

    def __init__(self, factories: Mapping[str, Any], env: Any, explainer: str, used: list[str]):
        self._factories, self._env, self._explainer, self._used = dict(factories), env, explainer, used
        self._built: dict[str, Any] = {}

    def build(self, name: str) -> Any:
        if name not in self._built:
            from fexbench.core import registry

            factory = self._factories.get(name) or registry.resources.get(name)
            options = dict((getattr(self._env, "resource_configs", None) or {}).get(name, {}))
            self._built[name] = factory(self._env, **options)
        return self._built[name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._factories:
            from fexbench.core.contract import ExplainerError

            raise ExplainerError(f"explainer {self._explainer!r} read the shared resource(s) {name} that its "
                                 f"resource_names() does not declare ({tuple(self._factories)})")
        if name not in self._used:
            self._used.append(name)
        return self.build(name)

    def __iter__(self):
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)


class _EnvResources(Mapping[str, Any]):
    """What a resource factory sees as `env.resources` inside the worker (a caption bank reads CLIP)."""

    def __init__(self, owner: _ChildResources):
        self._owner = owner

    def __getitem__(self, name: str) -> Any:
        return self._owner.build(name)

    def __iter__(self):
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)


def _error_text(exc: BaseException, what: str, memory_mb: float | None, probe: Any = None) -> str:
    """The error row's text for an exception in the worker: the exception and the last frames of
    its traceback; an allocation failure and a write into a read-only probe array are named."""
    from fexbench.core.errors import read_only_write_message

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    message = f"{type(exc).__name__}: {exc}"
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or ("allocate" in text and "memory" in text):
        limit = f"its worker's memory limit of {memory_mb:g} MB (address space; a hard limit)" if memory_mb \
            else "the memory available"
        return f"OutOfMemory: {what} ran out of memory: it reached {limit}: {message}\n{tb}"
    named = read_only_write_message(exc, probe, what)
    if named:
        return f"ExplainerError: {named}\n{tb}"
    return f"{message}\n{tb}"


def _child_main(sock: socket.socket, memory_mb: float | None, threads: int) -> None:
    """The worker process: limits first, then the explainer's code; one reply per step."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _drop_cap_sys_resource()
    if memory_mb:
        try:
            _set_memory_limit(memory_mb)
        except (ImportError, OSError, ValueError):
            pass
    start_mb = _maxrss_mb()
    what = "explainer"
    try:
        import types

        from fexbench.core.contract import Context, ExplainerError, Probe, Subject

        spec = pickle.loads(_recv_frame(sock) or b"")
        name, pristine = spec["name"], spec["explainer"]
        what = f"explainer {name!r}"
        pickle.loads(pristine)  # imports the explainer's module: under the limit

        def factory() -> Any:
            return pickle.loads(pristine)

        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from fexbench.core.contract import Environment

        env_fields = dict(spec["resource_env"])
        resource_env = Environment(**env_fields)
        used: list[str] = []
        resources = _ChildResources(spec["resources"], resource_env, name, used)
        object.__setattr__(resource_env, "resources", _EnvResources(resources))  # cached_property slot
        arrays: dict[int, np.ndarray] = {}
        models: dict[int, Any] = {}
    except BaseException as exc:  # noqa: BLE001 - reported, then this process ends
        _send_json(sock, {"ok": False, "error": f"ExplainerError: {what} could not be loaded in its worker "
                                                 f"process: {_error_text(exc, what, memory_mb)}"})
        return
    _send_json(sock, {"ok": True, "ready": True})
    while True:
        try:
            frame = _recv_frame(sock)
        except (EOFError, OSError):
            return
        if frame is None:
            return
        step = pickle.loads(frame)
        try:
            for token, (dtype, shape, data) in step["arrays"].items():
                array = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)  # backed by immutable bytes
                arrays[token] = array
            for token, data in step["models"].items():
                models[token] = pickle.loads(data)
            results, fit_s, explain_s, probe = [], 0.0, 0.0, None
            bar, cases = step.get("bar"), step["cases"]
            if bar is not None:
                import threading

                from tqdm.auto import tqdm

                tqdm.set_lock(threading.RLock())  # not a multiprocessing lock: a killed worker leaks no semaphore
                cases = tqdm(cases, desc=bar, unit="subject", leave=False)
            for case in cases:
                p = case["probe"]
                probe = Probe(arrays[p["images"]].view(), arrays[p["features"]].view(), arrays[p["logits"]].view(),
                              p["layer"], tuple(p["ids"]))
                attributes = None if case["attributes"] is None else types.MappingProxyType(case["attributes"])
                context = Context(probe=probe, vocabulary=tuple(case["vocabulary"]), resources=resources,
                                  seed=case["seed"], device=case["device"], cache_dir=Path(case["cache_dir"]),
                                  attributes=attributes)
                subject = Subject(name=case["alias"], model=models[case["model"]],
                                  class_names=tuple(case["class_names"]), weights_hash=case["weights_hash"],
                                  config=types.MappingProxyType({}))
                explainer = factory()
                t0 = time.perf_counter()
                explainer = explainer.fit(subject, context) or explainer
                t1 = time.perf_counter()
                out = explainer.explain(subject, case["targets"], context)
                explain_s += time.perf_counter() - t1
                fit_s += t1 - t0
                try:
                    results.append(to_plain(out))
                except TypeError as exc:
                    raise ExplainerError(f"{what} on subject {case['alias']!r}: {exc}") from None
            reply = {"ok": True, "results": results, "fit_s": fit_s, "explain_s": explain_s, "used": list(used)}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included: the row says so
            reply = {"ok": False, "error": _error_text(exc, what, memory_mb, probe)}
        reply["added_mb"] = max(0.0, _maxrss_mb() - start_mb)
        try:
            _send_json(sock, reply)
        except (OSError, ValueError, TypeError) as exc:
            try:
                _send_json(sock, {"ok": False, "error": f"ExplainerError: {what}: its reply could not be sent "
                                                        f"({type(exc).__name__}: {exc})"})
            except OSError:
                return
        if not reply["ok"]:
            return
