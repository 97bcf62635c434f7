"""The fault catalogue: each way a cache, a result file, a config or a concurrent run can go wrong,
and the outcome fexbench promises for it (docs/guarantees.md). Every case checks the named outcome
and that what is published (the result files' metrics) is what a clean run publishes.

One tiny waterbirds-spurious run is made once; each case corrupts a copy of its folders.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fexbench.core.cache import build_lock, sweep_stale_temps
from fexbench.core.results import read_result, read_results_dir
from fexbench.cli import main

TASK = "waterbirds-spurious"
TINY = {"rhos": [0.5, 0.98], "seeds": [0], "n_train": 200, "n_probe": 60, "n_test": 80, "epochs": 1}
EXPLAINERS = ("oracle", "random")
REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, resume: bool = True) -> dict:
    from fexbench.core.contract import Environment
    from fexbench.harness.driver import run

    env = Environment(cache_dir=root / "cache", out_dir=root / "out", progress=False)
    results = run([TASK], list(EXPLAINERS), env, task_configs={TASK: TINY}, resume=resume, log=lambda s: None)
    return {r.explainer: r for r in results}


def _published(root: Path) -> dict:
    """What a reader of the results folder sees: each job's status and metric values."""
    out = {}
    for name in EXPLAINERS:
        data = json.loads((root / "out" / TASK / f"{name}.json").read_text())
        out[name] = (data["status"], [(m["name"], m["value"]) for m in data["metrics"]])
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    results = _run(root)
    assert all(r.status == "ok" for r in results.values()), {k: r.error for k, r in results.items()}
    return root


@pytest.fixture
def copy(clean, tmp_path) -> Path:
    shutil.copytree(clean, tmp_path / "run")
    return tmp_path / "run"


def _one(root: Path, pattern: str) -> Path:
    files = sorted(root.glob(pattern))
    assert files, pattern
    return files[0]


def _assert_repaired(copy: Path, clean: Path, capsys, culprit: Path) -> None:
    results = _run(copy, resume=False)
    err = capsys.readouterr().err
    assert str(culprit) in err and "Traceback" not in err, err
    assert sum(str(culprit) in line for line in err.splitlines()) == 1  # one line names it
    assert all(r.status == "ok" for r in results.values())
    assert _published(copy) == _published(clean)


# -- cached artefacts ------------------------------------------------------------------------------
def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) - 64, len(raw), 7):  # the tensor data, past the header
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_cached_activations_are_named_and_recomputed(clean, copy, capsys):
    path = max(copy.glob("cache/activations/*.safetensors"), key=lambda p: p.stat().st_size)
    _flip(path)
    _assert_repaired(copy, clean, capsys, path)


def test_well_formed_but_different_activations_are_caught(clean, copy, capsys):
    path = max(copy.glob("cache/activations/*.safetensors"), key=lambda p: p.stat().st_size)
    arrays = {k: np.random.default_rng(0).normal(size=v.shape).astype(v.dtype) for k, v in load_file(str(path)).items()}
    save_file(arrays, str(path))
    _assert_repaired(copy, clean, capsys, path)


@pytest.mark.parametrize("edit", ["weights_sha256", "rho", "truncate"])
def test_edited_or_torn_subject_card_is_caught(clean, copy, capsys, edit):
    card = _one(copy, "cache/subjects/*/card.json")
    if edit == "truncate":
        card.write_text(card.read_text()[:40])
    else:
        data = json.loads(card.read_text())
        if edit == "rho":
            data["data"]["rho"] = 0.1
        else:
            data["weights_sha256"] = "0" * 64
        card.write_text(json.dumps(data))
    _assert_repaired(copy, clean, capsys, card)


def test_truncated_subject_weights_are_retrained_not_a_crash(clean, copy, capsys):
    weights = _one(copy, "cache/subjects/*/model.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    _assert_repaired(copy, clean, capsys, weights)


def test_truncated_world_file_is_rebuilt(clean, copy, capsys):
    world = _one(copy, "cache/worlds/*.safetensors")
    world.write_bytes(world.read_bytes()[: world.stat().st_size // 2])
    _assert_repaired(copy, clean, capsys, world)


# -- result files ----------------------------------------------------------------------------------
def test_edited_result_is_not_resumed(clean, copy, capsys):
    path = copy / "out" / TASK / "oracle.json"
    data = json.loads(path.read_text())
    data["metrics"][0]["value"] = 0.12  # same job key, a plausible number
    path.write_text(json.dumps(data))
    _run(copy)
    err = capsys.readouterr().err
    assert f"{path}: content does not match its recorded digest" in err and "Traceback" not in err
    assert _published(copy) == _published(clean)


def test_result_without_digest_is_recomputed_and_noted_in_summaries(clean, copy, capsys):
    path = copy / "out" / TASK / "oracle.json"
    data = json.loads(path.read_text())
    del data["digest"]
    path.write_text(json.dumps(data))
    results, problems = read_results_dir(copy / "out")
    assert len(results) == 2 and any(f"{path}: no recorded digest" in p and "unverified" in p for p in problems)
    _run(copy)
    assert "no recorded digest" in capsys.readouterr().err and read_result(path).digest is not None


BAD_RESULTS = {
    "non-utf8": lambda p: p.write_bytes(b'{"task": "\xff\xfe"}'),
    "json-list": lambda p: p.write_text("[1, 2, 3]"),
    "no-value-range": lambda p: _edit_metric(p, lambda m: m.pop("value_range")),
    "value-abc": lambda p: _edit_metric(p, lambda m: m.update(value="abc")),
}


def _edit_metric(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data["metrics"][0])
    del data["digest"]  # as a hand-written or older file would be: the field checks must catch it
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("fault", sorted(BAD_RESULTS))
def test_unreadable_result_is_named_and_recomputed_never_a_traceback(clean, copy, capsys, fault):
    path = copy / "out" / TASK / "random.json"
    BAD_RESULTS[fault](path)
    results, problems = read_results_dir(copy / "out")
    assert [r.explainer for r in results] == ["oracle"] and problems and problems[0].startswith(f"skipped {path}: ")
    _run(copy)
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert _published(copy) == _published(clean)


def test_a_bad_file_of_another_explainer_does_not_sink_the_run(clean, copy, capsys):
    bad = copy / "out" / TASK / "class-name.json"
    bad.write_bytes(b"\xff\xfe not json")
    config = copy / "run.toml"
    config.write_text(textwrap.dedent(f"""
        [run]
        replicates = 1
        out = "{copy / 'out'}"
        cache_dir = "{copy / 'cache'}"
        tasks = ["{TASK}"]
        explainers = ["oracle"]
        progress = false
        [tasks.{TASK}]
        """) + "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items()) + "\n")
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"summary: skipped {bad}: not UTF-8 text" in err and "Traceback" not in err
    assert _published(copy) == _published(clean)


# -- bad config and command-line input ---------------------------------------------------------------
def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("fexbench: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return captured.err


@pytest.mark.parametrize("text, expected", [
    ("x = " + "[" * 50_000 + "]" * 50_000, "nested too deeply to parse"),
    ("[tasks.waterbirds-spurious]\nrhos = " + "[" * 30 + "]" * 30, "nested deeper than 16 levels"),
    ("[tasks.waterbirds-spurious]\nrhos = [" + "0.5," * 2_000_000 + "]", "bytes; a run config is at most 1048576 bytes"),
    ("[tasks.waterbirds-spurious]\nrhos = [" + "0.5," * 20_000 + "]", "rhos: 20000 entries; at most 10000"),
    ("[tasks.waterbirds-spurious]\ndata = { rooot = \"x\" }", "tasks.waterbirds-spurious.data.rooot: unknown key"),
    ("[tasks.waterbirds-spurious]\nseeds = [-1]", "tasks.waterbirds-spurious.seeds[0]: must be an integer in [0, "),
])
def test_bad_configs_are_one_line(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    err = _cli_error(capsys, ["run", "--config", str(config), "--out", str(tmp_path / "o"),
                              "--cache-dir", str(tmp_path / "c")])
    assert f"{config}: " in err and expected in err


@pytest.mark.parametrize("flags, expected", [
    (["--seed", "-1"], "command line: --seed: must be an integer in [0, 4294967295], got -1"),
    (["--seed", "4294967296"], "command line: --seed: must be an integer in [0, 4294967295]"),
    (["--out", "FILE"], "command line: --out: "),
])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, expected):
    (tmp_path / "a-file").write_text("not a folder")
    flags = [str(tmp_path / "a-file") if f == "FILE" else f for f in flags]
    err = _cli_error(capsys, ["run", "--tasks", TASK, "--explainers", "random", "--cache-dir", str(tmp_path / "c"),
                              *flags])
    assert expected in err
    assert not (tmp_path / "c").exists()  # rejected before any work


# -- processes: sharing a cache, dying mid-write --------------------------------------------------------
_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_SHARED_RUN = """
import fcntl, json, sys
from pathlib import Path
import fexbench.models.subjects as subjects
from fexbench.core.contract import Environment
from fexbench.harness.driver import run

root, log = Path(sys.argv[1]), Path(sys.argv[2])
train = subjects.train_cnn
def counted(data, config, progress=True, **kwargs):
    with open(log, "a") as f:
        f.write(f"{data.content_hash} {config.seed}\\n")
    return train(data, config, progress, **kwargs)
subjects.train_cnn = counted
# threads=1: no worker processes, so this process's counter sees every training (workers share the
# same locked cache: fexbench.models.parallel)
env = Environment(cache_dir=root / "cache", out_dir=Path(sys.argv[3]), progress=False, threads=1)
results = run([%r], ["oracle"], env, task_configs={%r: json.loads(sys.argv[4])}, log=lambda s: None)
print(json.dumps([[m.name, m.value] for r in results for m in r.metrics]))
""" % (TASK, TASK)


def test_two_processes_on_one_cache_train_each_subject_once(tmp_path):
    script, log = tmp_path / "shared.py", tmp_path / "trained.log"
    script.write_text(_SHARED_RUN)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(log), str(tmp_path / f"out{i}"),
                               json.dumps(TINY)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_ENV)
             for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    trained = log.read_text().splitlines()
    base = 1 if TINY.get("base_epochs", 1) else 0  # the replicate's base network, fine-tuned into every subject
    assert len(trained) == len(TINY["rhos"]) * len(TINY["seeds"]) + base == len(set(trained))  # each once
    assert outputs[0][0] == outputs[1][0] and json.loads(outputs[0][0])  # identical results


_HOLD_LOCK = """
import sys, time
from fexbench.core.cache import build_lock
lock = build_lock(sys.argv[1])  # kept referenced: a collected FileLock releases itself
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_held_by_a_killed_process_is_recovered(tmp_path):
    target = tmp_path / "artefact.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(target)], stdout=subprocess.PIPE, text=True, env=_ENV)
    assert proc.stdout.readline().strip() == "held"
    lock = build_lock(target)
    with pytest.raises(Exception):  # filelock.Timeout: held by the other process
        lock.acquire(timeout=0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    lock.acquire(timeout=10)  # the OS released it with its holder
    lock.release()


_TORN_WRITE = """
import sys, time
from pathlib import Path
from fexbench.core.cache import atomic_write

def slow(tmp):
    with open(tmp, "w") as f:
        f.write("half a fi")
        f.flush()
        print("writing", flush=True)
        time.sleep(600)

atomic_write(sys.argv[1], slow)
"""


def test_kill_during_a_write_leaves_the_old_file_and_the_temp_is_swept(tmp_path):
    target = tmp_path / "out" / "result.json"
    target.parent.mkdir()
    target.write_text('{"old": true}')
    proc = subprocess.Popen([sys.executable, "-c", _TORN_WRITE, str(target)], stdout=subprocess.PIPE, text=True, env=_ENV)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads(target.read_text()) == {"old": True}  # readers never see half a file
    temps = list(target.parent.glob(".*.tmp"))
    assert len(temps) == 1
    assert sweep_stale_temps(target.parent) == []  # a fresh temp may be a live writer's: kept
    old = time.time() - 3600
    os.utime(temps[0], (old, old))
    assert sweep_stale_temps(target.parent) == temps and not temps[0].exists()


def test_cache_files_follow_the_umask(clean):
    mask = os.umask(0)
    os.umask(mask)
    files = [p for p in (clean / "cache").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    files += list((clean / "out").rglob("*.json"))
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~mask}


def test_an_unreachable_ray_address_is_refused_at_once_naming_it():
    """ray.init would wait on its own long timeout; fexbench checks the port first."""
    import socket
    import time

    from fexbench.core.errors import UsageError
    from fexbench.harness.executors import check_reachable

    with socket.socket() as listening:  # a port that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
        check_reachable(f"ray://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(UsageError, match=f"127.0.0.1:{port}"):  # closed now: refused
        check_reachable(f"127.0.0.1:{port}", timeout_s=2)
    assert time.perf_counter() - start < 3
    check_reachable("auto")  # left to Ray
