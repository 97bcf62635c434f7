"""Training a zoo in worker processes gives the very weights of training it in this process."""
from __future__ import annotations

from fexbench.core.contract import Environment
from fexbench.tasks.waterbirds import WaterbirdsSpurious

TINY = dict(rhos=(0.5, 0.98), seeds=(0,), n_train=300, n_probe=80, n_test=80, epochs=1)


def _weights(tmp_path, threads: int) -> dict[str, str]:
    prepared = WaterbirdsSpurious(**TINY).prepare(Environment(cache_dir=tmp_path / f"t{threads}", progress=False,
                                                              threads=threads))
    return {k: v for k, v in prepared.hashes.items() if k.startswith("weights:")}


def test_worker_processes_train_the_same_weights_as_one_process(tmp_path, monkeypatch):
    import fexbench.models.subjects as subjects

    def not_here(*args, **kwargs):
        raise AssertionError("a subject was trained in the main process, not in a worker")

    with monkeypatch.context() as m:  # spawned workers import fexbench afresh: the patch stays here
        m.setattr(subjects, "train_cnn", not_here)  # (a stub prebuild fails here)
        parallel = _weights(tmp_path, 2)  # two usable CPUs: the two subjects train in worker processes
    assert len(list((tmp_path / "t2" / "subjects").glob("*/model.safetensors"))) == 2
    assert parallel == _weights(tmp_path, 1) and len(parallel) == 2
