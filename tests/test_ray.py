"""The job graph on Ray: the same results as the local executor, and a worker killed in the middle
of a job ends, after Ray's retry, with every result written exactly once. Skipped without Ray
(an optional extra: pip install -e ".[ray]")."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from fexbench.core import registry  # noqa: E402
from fexbench.core.contract import Explainer, Explanation  # noqa: E402
from fexbench.core.results import read_results_dir  # noqa: E402
from fexbench.harness.executors import RayExecutor  # noqa: E402
from fexbench.core.contract import Environment  # noqa: E402
from fexbench.harness.driver import run  # noqa: E402
from result_fingerprint import fingerprint  # noqa: E402

TASK = "waterbirds-spurious"
TINY = dict(rhos=[0.5, 0.9, 0.98], seeds=[0], n_train=300, n_probe=100, n_test=100, epochs=2)
EXPLAINERS = ["oracle", "random", "class-name"]


class KillsItsWorkerOnce(Explainer):
    """Kills the process it runs in the first time (a marker file remembers it), like an OOM kill
    or a preempted node; answers with the class names afterwards."""

    name = "kills-once"

    def __init__(self, marker: str = ""):
        self.marker = marker

    def explain(self, subject, targets, context):
        marker = Path(self.marker)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return [Explanation.from_weights(t, {t.name or "x": 1.0}) for t in targets]



@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (Ray's start-up is the slow part)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    env = Environment(cache_dir=root / "cache", out_dir=root / "local", progress=False, replicates=2)
    return root, run([TASK], EXPLAINERS, env, {TASK: TINY}, log=lambda line: None)


def test_ray_gives_the_local_executors_results(cluster, local_run):
    root, expected = local_run
    env = Environment(cache_dir=root / "cache", out_dir=root / "on-ray", progress=False, replicates=2)
    lines = []
    got = run([TASK], EXPLAINERS, env, {TASK: TINY}, log=lines.append, executor=RayExecutor())
    assert [(r.task, r.explainer) for r in got] == [(r.task, r.explainer) for r in expected]
    assert fingerprint(got) == fingerprint(expected)
    assert all(r.status == "ok" and not r.resumed for r in got)
    on_disk, problems = read_results_dir(root / "on-ray")
    assert not problems and fingerprint(on_disk) == fingerprint(expected)
    assert (root / "on-ray" / "timing.json").is_file() and "prepared 3 subjects x 2 replicates" in lines[0]


def test_a_worker_killed_mid_job_is_retried_and_every_result_written_once(cluster, local_run, tmp_path):
    root, _ = local_run
    marker = tmp_path / "killed-once"
    registry.register_explainer("kills-once", KillsItsWorkerOnce, override=True)
    try:
        env = Environment(cache_dir=root / "cache", out_dir=tmp_path / "out", progress=False, replicates=1)
        got = run([TASK], ["kills-once", "oracle"], env, {TASK: TINY}, {"kills-once": {"marker": str(marker)}},
                  log=lambda line: None, executor=RayExecutor(max_retries=2))
    finally:
        registry.explainers.unregister("kills-once")
    assert marker.exists(), "the explainer never killed its worker: the test tests nothing"
    assert int(marker.read_text()) != os.getpid()  # it was a worker that died, not this process
    assert [(r.explainer, r.status) for r in got] == [("kills-once", "ok"), ("oracle", "ok")]
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == sorted([f"{TASK}/kills-once.json", f"{TASK}/oracle.json", "timing.json"])  # no temp, no duplicate
    on_disk, problems = read_results_dir(tmp_path / "out")
    assert not problems and sorted((r.explainer, r.job_key) for r in on_disk) == \
        sorted((r.explainer, r.job_key) for r in got)


def test_without_retries_the_killed_job_is_an_error_row_and_the_rest_runs_on(cluster, local_run, tmp_path):
    """The failure test can fail: with max_retries=0 the kill is not absorbed."""
    root, _ = local_run
    registry.register_explainer("kills-once", KillsItsWorkerOnce, override=True)
    try:
        env = Environment(cache_dir=root / "cache", out_dir=tmp_path / "out", progress=False, replicates=1)
        got = run([TASK], ["kills-once", "oracle"], env, {TASK: TINY},
                  {"kills-once": {"marker": str(tmp_path / "marker")}}, log=lambda line: None,
                  executor=RayExecutor(max_retries=0))
    finally:
        registry.explainers.unregister("kills-once")
    assert [(r.explainer, r.status) for r in got] == [("kills-once", "error"), ("oracle", "ok")]
    assert "Ray worker" in got[0].error
