"""The prefetch process (fexbench.harness.prefetch): it builds the later tasks' preparations into the
cache while the run works on the first task, and the run's results are exactly those of the
sequential run."""
from __future__ import annotations

from pathlib import Path

import pytest

from fexbench.core import registry
from fexbench.core.contract import Environment
from fexbench.harness.executors import LocalExecutor, make_executor
from fexbench.harness.graph import build_graph
from fexbench.harness import prefetch
from fexbench.harness.prefetch import Claims, Prefetcher, jobs_from_the_end, work_ahead
from fexbench.harness.driver import run
from result_fingerprint import fingerprint

WATERBIRDS = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2, n_bootstrap=200)
IMAGENET9 = dict(p_natives=(0.0, 1.0), n_train=900, n_probe=270, n_test=450, epochs=4, width=8, n_bootstrap=200)
TASKS = ["waterbirds-spurious", "imagenet9-background"]
CONFIGS = {"waterbirds-spurious": WATERBIRDS, "imagenet9-background": IMAGENET9}
EXPLAINERS = ["oracle", "random", "class-name"]



def cache_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def test_work_ahead_follows_the_graph_and_skips_the_first_tasks_preparations():
    env = Environment(replicates=2)
    graph = build_graph(TASKS, ["oracle", "clip-dissect"], env, CONFIGS)
    items = work_ahead(graph)
    assert items[0] == ("resource", "clip")  # read by the first task's jobs: needed first
    assert [(i[0], i[1], i[-1]) for i in items[1:]] == [("prepare", "imagenet9-background", 0),
                                                        ("prepare", "imagenet9-background", 1)]
    assert items[1][2] == IMAGENET9  # the task's options travel with it
    jobs = jobs_from_the_end(graph, resume=True)
    assert [j[1] for j in jobs] == [n.id for n in reversed(graph.of_kind("job"))]


def test_claims_give_each_job_to_one_process(tmp_path):
    claims = Claims(str(tmp_path))
    assert claims.claim("job:a/x", "run") and claims.claim("job:a/x", "run")
    assert not claims.claim("job:a/x", "helper")
    assert claims.claim("job:b/y", "helper") and not claims.claim("job:b/y", "run")


def test_prefetch_gives_the_sequential_results(tmp_path, monkeypatch):
    """Same metrics, job keys, hashes and explanations with and without the helper, on two tasks of
    two replicates; and the helper did build the second task's replicates."""
    monkeypatch.setattr(prefetch, "COLD_PREPARE_S", 0.0)  # the tiny first task prepares fast even cold
    expected = run(TASKS, EXPLAINERS, Environment(cache_dir=tmp_path / "c1", out_dir=tmp_path / "o1", progress=False,
                                                  replicates=2, threads=2), CONFIGS, log=lambda line: None)
    env = Environment(cache_dir=tmp_path / "c2", out_dir=tmp_path / "o2", progress=False, replicates=2, threads=2)
    executor = make_executor("local", prefetch=True)
    got = run(TASKS, EXPLAINERS, env, CONFIGS, log=lambda line: None, executor=executor)
    assert fingerprint(got) == fingerprint(expected)
    assert all(r.status == "ok" for r in got)
    helper = executor._helper
    assert helper and {helper.items[i][:2] for i in helper.seconds} >= {("prepare", "imagenet9-background")}
    assert all(ok for _, ok in helper.seconds.values()) and not helper.process.is_alive()
    # it also took jobs from the end (the last task's last explainer at least), and they are the
    # ones reported: not resumed, computed once
    assert f"job:imagenet9-background/{EXPLAINERS[-1]}" in helper.jobs and set(helper.jobs.values()) == {"ok"}
    assert not any(r.resumed for r in got)


def test_no_helper_on_a_warm_run(tmp_path):
    """A first preparation that only read the cache means a warm run: no second process."""
    env = Environment(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", progress=False, threads=2)
    run(["waterbirds-spurious"], ["random"], env, {"waterbirds-spurious": WATERBIRDS}, log=lambda line: None)
    executor = make_executor("local", prefetch=True)
    run(["waterbirds-spurious"], ["random"], env, {"waterbirds-spurious": WATERBIRDS}, log=lambda line: None,
        executor=executor)
    assert executor._helper is False


def test_the_helper_builds_everything_the_later_task_reads(tmp_path):
    """After the helper alone has run, preparing the second task reads the cache and writes nothing:
    the helper built all of it (data, zoo, activations, ground truth) with the run's settings."""
    env = Environment(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", progress=False, replicates=2, threads=2)
    graph = build_graph(TASKS, EXPLAINERS, env, CONFIGS)
    helper = Prefetcher.start(graph, env)
    assert helper is not None
    helper.process.join(timeout=300)
    seconds = helper.stop()
    assert set(seconds) == {"imagenet9-background"} and all(ok for _, ok in helper.seconds.values())
    assert helper.jobs and set(helper.jobs.values()) == {"ok"}  # unopposed, it took every job
    before = cache_files(tmp_path / "cache")
    assert before, "the helper wrote nothing"
    task = registry.tasks.get("imagenet9-background")(**IMAGENET9)
    for r in range(2):
        task.prepare(env.replicate(r))
    assert cache_files(tmp_path / "cache") == before


def test_a_failing_prefetch_is_ignored(tmp_path):
    """An item the helper cannot build (an unknown task) is reported as not ok and raises nothing; the
    run itself names the problem on its own path."""
    env = Environment(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out", progress=False, threads=2)
    graph = build_graph(["waterbirds-spurious", "no-such-task"], ["random"], env, {"waterbirds-spurious": WATERBIRDS})
    helper = Prefetcher.start(graph, env)
    assert helper is not None
    helper.process.join(timeout=120)
    assert helper.stop() == {"no-such-task": pytest.approx(helper.seconds[0][0])}
    assert not helper.jobs  # it cannot set up a job of an unknown task, so it leaves them all to the run
    assert helper.seconds[0][1] is False


def test_prefetch_needs_a_second_cpu(tmp_path):
    env = Environment(cache_dir=tmp_path, threads=1)
    graph = build_graph(TASKS, EXPLAINERS, env, CONFIGS)
    assert Prefetcher.start(graph, env) is None
    assert LocalExecutor().prefetch is False  # the API's default run stays one process


@pytest.mark.parametrize("model", ["subject-cnn", "clip"])
def test_outputs_do_not_depend_on_the_thread_count(model, small_clip):
    """Why splitting the threads between the run and its helper cannot move a number: the forward
    passes the run computes at the run's thread count give bit-identical outputs at 1 and 2."""
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


def test_ctrl_c_with_the_helper_running_ends_the_run_and_every_process_at_once(tmp_path):
    """SIGINT to the run's process group while the helper trains a zoo: exit status 130 within
    seconds, one line, and no helper or zoo worker left (a first version hung here)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    config = tmp_path / "run.toml"
    config.write_text(
        "[tasks.waterbirds-spurious]\n"
        "rhos = [0.5, 0.9]\nseeds = [0]\nn_train = 200\nn_probe = 80\nn_test = 80\nepochs = 1\nn_bootstrap = 50\n"
        "[tasks.imagenet9-background]\n"  # the helper's work ahead: long enough to be interrupted
        "p_natives = [0.0, 0.5, 1.0]\nseeds = [0, 1]\nn_train = 3000\nn_probe = 270\nn_test = 450\nepochs = 8\n")
    launcher = tmp_path / "launch.py"  # a file: spawned processes start from the main module's file
    launcher.write_text("import sys\nimport fexbench.harness.prefetch as p\n\nif __name__ == '__main__':\n"
                        "    p.COLD_PREPARE_S = 0.0  # the tiny first task prepares fast even cold\n"
                        "    from fexbench.cli import main\n    sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen(
        [sys.executable, str(launcher), "run", "--config", str(config), "--tasks",
         "waterbirds-spurious,imagenet9-background", "--explainers", "random", "--replicates", "1", "--threads", "2",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_process, family, deadline = psutil.Process(proc.pid), [], time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # wait for the helper's zoo workers
            family = run_process.children(recursive=True)
            if any(c.ppid() != proc.pid for c in family):  # a grandchild: the helper's own worker
                break
            time.sleep(0.2)
        assert proc.poll() is None and any(c.ppid() != proc.pid for c in family), "the helper never trained a zoo"
        time.sleep(1.0)
        family = run_process.children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        start = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out[-2000:]
        assert time.monotonic() - start < 15
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines[-1].startswith("fexbench: interrupted"), out[-2000:]  # one line, then nothing
        assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-2000:]  # not from any worker
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
