"""The thread policy: usable CPUs from affinity and cgroup quota, explicit requests, and subject
weights that do not depend on the number of threads."""
from __future__ import annotations

import pytest
import torch

from fexbench.core import threads


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_read_from_the_processs_own_cgroup(tmp_path):
    write(tmp_path / "proc", "0::/job.slice/run\n")
    write(tmp_path / "cg" / "job.slice" / "run" / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == pytest.approx(1.5)
    write(tmp_path / "cg" / "job.slice" / "run" / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") is None


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    write(tmp_path / "proc", "4:cpu,cpuacct:/docker/abc\n")
    folder = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "200000\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") == pytest.approx(2.0)
    write(folder / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_cpu_limit(tmp_path / "cg", tmp_path / "proc") is None


def test_the_choice_honours_explicit_requests_then_omp_then_usable_cpus():
    assert threads.choose(3, "--threads", environ={"OMP_NUM_THREADS": "1"}) == threads.ThreadChoice(3, "--threads")
    assert threads.choose(None, environ={"OMP_NUM_THREADS": "2"}) == threads.ThreadChoice(2, "OMP_NUM_THREADS")
    auto = threads.choose(0, environ={})
    assert auto.source == "available CPUs" and 1 <= auto.threads == threads.available_cpus()
    with pytest.raises(threads.ThreadsError, match="OMP_NUM_THREADS='many'"):
        threads.choose(None, environ={"OMP_NUM_THREADS": "many"})


def test_a_component_block_restores_torchs_setting():
    before = torch.get_num_threads()
    with threads.component("subject-training"):
        assert torch.get_num_threads() == threads.COMPONENT_THREADS["subject-training"]
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError, match="unknown component"):
        threads.component("no-such-step")


def test_subject_weights_do_not_depend_on_the_callers_thread_count():
    """Trained under torch.set_num_threads(1) or (2), a subject's weights are bit-identical."""
    from fexbench.data import world
    from fexbench.models.subjects import TrainConfig, train_cnn

    scenes, _, _ = world.waterbirds_scenes(96, 0.9, 3)
    train = world.scenes_to_imageset(scenes, scenes.shape % 2, ("a", "b"), "t", 16, 3)
    config = TrainConfig(n_classes=2, width=4, hidden=8, epochs=1, batch_size=32)
    before, weights = torch.get_num_threads(), []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            weights.append(train_cnn(train, config, progress=False).state_dict())
            assert torch.get_num_threads() == n  # restored after training
    finally:
        torch.set_num_threads(before)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
