"""The executors (fexbench.harness.executors): one unit of work for all of them, the process
executor's results equal to the local run's, its retries of a dead worker, its order, and Ctrl-C."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from fexbench.core import registry
from fexbench.core.contract import Environment, Explainer, Explanation
from fexbench.core.errors import UsageError
from fexbench.core.results import read_results_dir
from fexbench.harness import executors
from fexbench.harness.driver import run
from fexbench.harness.executors import (LocalExecutor, ProcessExecutor, RayExecutor, build_resource, execute_job,
                                        longest_path_first, make_executor, prepare_replicate, worker_split)
from fexbench.harness.graph import JobGraph, Node
from fexbench.harness.isolation import SECRET_FILE
from result_fingerprint import fingerprint

WATERBIRDS = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2, n_bootstrap=200)
IMAGENET9 = dict(p_natives=(0.0, 1.0), n_train=450, n_probe=270, n_test=270, epochs=2, width=8, n_bootstrap=200)
TASKS = ["waterbirds-spurious", "imagenet9-background", "no-such-task"]
CONFIGS = {"waterbirds-spurious": WATERBIRDS, "imagenet9-background": IMAGENET9}
EXPLAINERS = ["oracle", "random", "class-name", "no-such-explainer"]
DESIGN = dict(replicates=1, task_replicates={"waterbirds-spurious": 2})  # a per-task design


class RecordingPool(ProcessPoolExecutor):
    """A process pool that notes which functions it is handed (in the driver's process)."""

    handed: list = []

    def submit(self, fn, /, *args, **kwargs):
        RecordingPool.handed.append(fn)
        return super().submit(fn, *args, **kwargs)


class _Ref:
    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class FakeRay:
    """The part of Ray's API the Ray executor uses, run eagerly in this process: every call's
    arguments pickled and unpickled (as they travel to a worker), top-level refs resolved."""

    def __init__(self):
        self.remote_functions = []

    def is_initialized(self):
        return True

    def remote(self, fn):
        self.remote_functions.append(fn)
        ray = self

        class Remote:
            def options(self, **options):
                assert options["num_cpus"] == 1 and options["retry_exceptions"] is False
                return self

            def remote(self, *args):
                try:
                    args = pickle.loads(pickle.dumps([ray.get(a) if isinstance(a, _Ref) else a for a in args]))
                    return _Ref(fn(*args))
                except Exception as exc:  # noqa: BLE001
                    return _Ref(error=exc)

        return Remote()

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


def environment(root: Path, name: str, **overrides) -> Environment:
    fields = dict(cache_dir=root / f"cache-{name}", out_dir=root / name, progress=False, threads=1, **DESIGN)
    return Environment(**{**fields, **overrides})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: two tasks (one of two replicates), an unknown task and an unknown explainer,
    cold, in this process."""
    root = tmp_path_factory.mktemp("executors")
    lines: list[str] = []
    results = run(TASKS, EXPLAINERS, environment(root, "local"), CONFIGS, log=lines.append)
    return root, results, lines


def test_one_unit_of_work_for_every_executor():
    """The process and Ray executors hand their pool and ray.remote the same module-level functions."""
    for kind in ("job_function", "prepare_function", "resource_function"):
        assert getattr(ProcessExecutor, kind) is getattr(RayExecutor, kind)
    assert ProcessExecutor.job_function is execute_job and ProcessExecutor.prepare_function is prepare_replicate
    assert RayExecutor.resource_function is build_resource


def test_the_process_executor_gives_the_local_results(local_run):
    root, expected, local_lines = local_run
    RecordingPool.handed = []
    lines: list[str] = []
    env = environment(root, "process")
    # a cold cache of its own, with the local run's secret (aliases and explainer seeds come from it)
    Path(env.cache_dir).mkdir()
    shutil.copy(root / "cache-local" / SECRET_FILE, Path(env.cache_dir) / SECRET_FILE)
    got = run(TASKS, EXPLAINERS, env, CONFIGS, log=lines.append, executor=ProcessExecutor(2, pool=RecordingPool))
    assert [(r.task, r.explainer) for r in got] == [(r.task, r.explainer) for r in expected]  # graph order
    assert fingerprint(got) == fingerprint(expected)
    statuses = {(r.task, r.explainer): r.status for r in got}
    assert statuses[("waterbirds-spurious", "oracle")] == "ok" and statuses[("no-such-task", "oracle")] == "error"
    assert statuses[("imagenet9-background", "no-such-explainer")] == "error"
    assert set(RecordingPool.handed) - {executors._started} == {prepare_replicate, execute_job}
    assert lines[0] == "fexbench: 2 worker processes of 1 thread"
    assert any(line.startswith("[waterbirds-spurious] prepared 3 subjects x 2 replicates in")
               and line.endswith("(summed over workers)") for line in lines)
    assert sorted(line.split(" (")[0] for line in lines[1:] if "prepared" not in line) == \
        sorted(line.split(" (")[0] for line in local_lines if "prepared" not in line)  # the same job lines
    on_disk, problems = read_results_dir(env.out_dir)
    assert not problems and fingerprint(on_disk) == fingerprint(expected)
    timing = json.loads((env.out_dir / "timing.json").read_text())
    assert {t: e["replicates"] for t, e in timing["tasks"].items()} == {"waterbirds-spurious": 2,
                                                                       "imagenet9-background": 1}
    assert set(timing["tasks"]["waterbirds-spurious"]["jobs_s"]) >= {"oracle", "random", "class-name"}
    assert timing["tasks"]["waterbirds-spurious"]["prepare_s"] > 0
    again = run(TASKS[:2], EXPLAINERS[:3], env, CONFIGS, log=lambda line: None, executor=ProcessExecutor(2))
    assert all(r.resumed for r in again)  # same job keys: resumed


def test_the_ray_executor_runs_the_same_functions_to_the_same_results(local_run, monkeypatch):
    """RayExecutor against an in-process stand-in for Ray (Ray itself: tests/test_ray.py): what it
    hands ray.remote is the process executor's unit of work, and the results are the local ones."""
    root, expected, _ = local_run
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    env = environment(root, "ray", cache_dir=root / "cache-local")  # re-prepares from the local run's cache
    got = run(TASKS, EXPLAINERS, env, CONFIGS, log=lambda line: None, executor=RayExecutor())
    assert fake.remote_functions == [build_resource, prepare_replicate, execute_job]
    assert [(r.task, r.explainer) for r in got] == [(r.task, r.explainer) for r in expected]
    assert fingerprint(got) == fingerprint(expected)


class KillsItsWorker(Explainer):
    """Kills the worker process that builds it for its job (like an OOM kill): once (a marker file
    remembers it), or always; answers with the class names when it lives. Never this process (the
    graph builds one here to read its resources)."""

    name = "kills"

    def __init__(self, marker: str = "", always: bool = False, driver: int = 0):
        self.marker, self.always, self.driver = marker, always, driver
        if os.getpid() != driver and (always or not Path(marker).exists()):
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {t.name or "x": 1.0}) for t in targets]


@pytest.mark.parametrize("always", [False, True])
def test_a_worker_that_dies_mid_job_is_tried_again_alone(local_run, tmp_path, always):
    """The job's worker dies. Once: the job runs again (alone, on a fresh pool) and every result is
    written once. Always: after its retry it is an error row, and the other jobs run on."""
    root, _, _ = local_run
    marker = tmp_path / "killed"
    registry.register_explainer("kills", KillsItsWorker, override=True)
    try:
        env = environment(root, "unused", cache_dir=root / "cache-local", out_dir=tmp_path / "out", task_replicates={})
        lines: list[str] = []
        got = run(["waterbirds-spurious"], ["kills", "oracle"], env, {"waterbirds-spurious": WATERBIRDS},
                  {"kills": {"marker": str(marker), "always": always, "driver": os.getpid()}}, log=lines.append, executor=ProcessExecutor(2))
    finally:
        registry.explainers.unregister("kills")
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died, not this process
    assert any("a worker process died" in line for line in lines)
    if always:
        assert [(r.explainer, r.status) for r in got] == [("kills", "error"), ("oracle", "ok")]
        assert "on a worker process" in got[0].error
    else:
        assert [(r.explainer, r.status) for r in got] == [("kills", "ok"), ("oracle", "ok")]
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["timing.json", "waterbirds-spurious/kills.json", "waterbirds-spurious/oracle.json"]


def test_worker_split_and_the_order_of_work():
    graph = JobGraph((Node("prepare", "prepare:a#0"), Node("prepare", "prepare:b#0"),
                      Node("job", "job:a/x", ("prepare:a#0",)), Node("job", "job:a/y", ("prepare:a#0",)),
                      Node("job", "job:b/x", ("job:a/x", "prepare:b#0"))), ("a", "b"), ("x", "y"), 1)
    assert worker_split(Environment(threads=4), graph) == (4, 1)
    assert worker_split(Environment(threads=2), graph) == (2, 1)
    assert worker_split(Environment(threads=16), graph) == (5, 3)  # never more workers than nodes
    rank = longest_path_first(graph, Environment())  # unknown tasks: unit costs by kind
    assert rank["prepare:a#0"] > rank["prepare:b#0"] and rank["job:a/x"] > rank["job:a/y"]


def test_executors_by_name():
    assert isinstance(make_executor(), ProcessExecutor) and isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(UsageError, match="process, local, ray"):
        make_executor("threads")
    with pytest.raises(UsageError, match="--ray-address is for --executor ray"):
        make_executor("process", "auto")


def test_one_cpu_runs_in_this_process(tmp_path):
    """Nothing to split: the process executor is the local run (no pool, no line of its own)."""
    env = Environment(cache_dir=tmp_path / "c", out_dir=tmp_path / "o", progress=False, threads=1)
    lines: list[str] = []
    RecordingPool.handed = []
    run(["no-such-task"], ["oracle"], env, log=lines.append, executor=ProcessExecutor(pool=RecordingPool))
    assert not RecordingPool.handed and lines[0].startswith("[no-such-task] ERROR preparing the task")


@pytest.mark.parametrize("model", ["subject-cnn", "clip"])
def test_outputs_do_not_depend_on_the_thread_count(model, small_clip):
    """Why splitting the threads between worker processes cannot move a number: the forward passes
    the run computes give bit-identical outputs at 1 and 2 threads."""
    import numpy as np
    import torch

    from fexbench.models.subjects import SmallCNN

    rng = np.random.default_rng(0)
    if model == "subject-cnn":
        torch.manual_seed(0)
        net = SmallCNN(n_classes=9).eval()
        x = torch.from_numpy(rng.standard_normal((128, 3, 48, 48)).astype(np.float32))
        forward = lambda: net(x).detach().numpy()  # noqa: E731
    else:
        images = (rng.random((64, 48, 48, 3)) * 255).astype(np.uint8)
        forward = lambda: small_clip.encode_images(images)  # noqa: E731
    before = torch.get_num_threads()
    try:
        outputs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                outputs.append(np.asarray(forward()))
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(outputs[0], outputs[1])


def _session(sid: int) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:  # a zombie is dead
                found.append(proc)
        except (OSError, psutil.Error):
            pass
    return found


@pytest.mark.parametrize("moment", ["workers starting", "zoo training"])
def test_ctrl_c_ends_the_run_and_every_process_wherever_it_lands(tmp_path, moment):
    """SIGINT to the run's process group while its workers start (importing numpy and torch) or
    while a worker's own processes train a zoo: exit status 130 within seconds, one line, no
    traceback from any process, and no process of the run left."""
    psutil = pytest.importorskip("psutil")
    config = tmp_path / "run.toml"
    config.write_text(
        "[tasks.waterbirds-spurious]\n"
        "rhos = [0.5, 0.9]\nseeds = [0]\nn_train = 200\nn_probe = 80\nn_test = 80\nepochs = 1\nn_bootstrap = 50\n"
        "[tasks.imagenet9-background]\n"  # long enough to be interrupted
        "p_natives = [0.0, 0.5, 1.0]\nseeds = [0, 1]\nn_train = 3000\nn_probe = 270\nn_test = 450\nepochs = 8\n")
    launcher = tmp_path / "fexbench-run.py"  # a main module with a file, as the `fexbench` script: zoos then
    launcher.write_text("import sys\nfrom fexbench.cli import main\n\n"  # train in a worker's own processes
                        "if __name__ == '__main__':\n    sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen(
        [sys.executable, str(launcher), "run", "--config", str(config), "--tasks",
         "waterbirds-spurious,imagenet9-background", "--explainers", "random", "--replicates", "1", "--threads", "2",
         "--executor", "process", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_process, deadline = psutil.Process(proc.pid), time.monotonic() + 300
        # both workers started (the run's handler is back) and still importing; or a worker's zoo worker
        wanted = (1, 2) if moment == "workers starting" else (2, 1)
        while time.monotonic() < deadline and proc.poll() is None:
            depths = [_depth(c, proc.pid) for c in run_process.children(recursive=True)
                      if "spawn_main" in " ".join(_cmdline(c))]
            if depths.count(wanted[0]) >= wanted[1]:
                break
            time.sleep(0.05)
        time.sleep(0.3 if moment == "workers starting" else 0.0)
        assert proc.poll() is None, "the run ended before the moment came"
        os.killpg(proc.pid, signal.SIGINT)
        start = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out[-2000:]
        assert time.monotonic() - start < 15
        time.sleep(0.5)
        left = _session(proc.pid)
        assert not left, [_cmdline(p) for p in left]
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines[-1].startswith("fexbench: interrupted"), out[-2000:]  # one line, then nothing
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _depth(process, ancestor: int) -> int:
    """How many generations below `ancestor` a process is (1: its child)."""
    for depth, parent in enumerate(process.parents(), start=1):
        if parent.pid == ancestor:
            return depth
    return 0
