"""Releases (fexbench.harness.release): made from a tiny run, scored on in a fresh cache with training
forbidden to the same numbers; tampered, mismatched, unsafe and oversized releases refused, naming
the file or field; folders, .tar and .zip archives and http URLs (a loopback server) all open."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import tarfile
import threading
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from fexbench import cli
from fexbench.core.release import TRAINING_ENV, ReleaseError
from fexbench.core.results import read_results_dir
from fexbench.harness import release

TINY = """
[run]
replicates = 1
tasks = ["waterbirds-spurious"]
explainers = ["random", "class-name", "oracle"]
explainer_seeds = 2

[tasks.waterbirds-spurious]
rhos = [0.5, 0.95]
seeds = [0]
n_train = 160
n_probe = 48
n_test = 48
epochs = 1
n_bootstrap = 20
"""
EXPLAINERS = "random,class-name,oracle"


@pytest.fixture(autouse=True)
def _training_allowed_after(monkeypatch):
    monkeypatch.delenv(TRAINING_ENV, raising=False)  # a run on a release forbids training in its process
    yield


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny run, and a release of it (folder and .tar)."""
    root = tmp_path_factory.mktemp("release")
    (root / "tiny.toml").write_text(TINY)
    rc = cli.main(["run", "--config", str(root / "tiny.toml"), "--cache-dir", str(root / "cache"),
                   "--out", str(root / "out"), "--quiet", "--executor", "local"])
    assert rc == 0
    rel = release.create(root / "out", root / "rel", archive=True)
    return root, rel


def _copy(rel: Path, dest: Path) -> Path:
    shutil.copytree(rel, dest)
    return dest


def _rewrite(rel: Path, edit) -> None:
    manifest = json.loads((rel / "manifest.json").read_text())
    edit(manifest)
    (rel / "manifest.json").write_text(json.dumps(manifest))


def _metrics(out: Path) -> dict:
    results, problems = read_results_dir(out)
    assert not problems
    # as JSON text: a metric with no value is NaN, which equals nothing, itself included
    return {r.explainer: json.dumps([asdict(m) for m in r.metrics], sort_keys=True) + json.dumps(dict(r.hashes))
            for r in results}


def test_a_release_holds_the_subjects_design_and_expected_hashes(made):
    root, rel = made
    manifest = json.loads((rel / "manifest.json").read_text())
    roles = {a["role"] for a in manifest["artefacts"]}
    assert roles == {"subject", "design", "ground-truth"}  # the baselines use no shared resource
    subjects = {a["name"] for a in manifest["artefacts"] if a["role"] == "subject"}
    assert subjects == {"cnn-rho0.5-s0", "cnn-rho0.95-s0", "cnn-base-w16"}  # the base they are fine-tuned from
    truth = {a["name"] for a in manifest["artefacts"] if a["role"] == "ground-truth"}
    assert "waterbirds-spurious/replicate-0/probe" in truth
    assert manifest["design"]["run"]["seed"] == 0 and manifest["design"]["tasks"]["waterbirds-spurious"]["rhos"]
    assert manifest["tasks"]["waterbirds-spurious"]["version"] >= 1
    assert str(root) not in (rel / "design" / "run-config.json").read_text()  # no local paths shipped
    assert (rel.with_name("rel.tar")).is_file()


def test_a_run_on_the_release_in_a_fresh_cache_trains_nothing_and_gives_the_same_numbers(made, tmp_path, monkeypatch,
                                                                                          capsys):
    root, rel = made
    import fexbench.models.subjects as subjects

    def no_training(*args, **kwargs):
        raise AssertionError("a run on a release trained a subject")
    monkeypatch.setattr(subjects, "train_cnn", no_training)
    rc = cli.main(["run", "--release", str(rel), "--explainers", EXPLAINERS, "--cache-dir", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "out"), "--quiet", "--executor", "local"])
    assert rc == 0, capsys.readouterr().err
    assert _metrics(tmp_path / "out") == _metrics(root / "out")
    digest = json.loads((tmp_path / "out" / "waterbirds-spurious" / "oracle.json").read_text())["config"]["release"]
    assert digest["digest"] == release.read_manifest(rel).digest
    results, problems = read_results_dir(tmp_path / "out")  # the stamped files still verify
    assert not problems and all(r.config["release"]["digest"] == digest["digest"] for r in results)


def test_a_subject_missing_from_the_release_is_an_error_naming_it(made, tmp_path, capsys):
    _, rel = made
    broken = _copy(rel, tmp_path / "rel")
    _rewrite(broken, lambda m: m.update(artefacts=[a for a in m["artefacts"] if a["name"] != "cnn-rho0.95-s0"]))
    rc = cli.main(["run", "--release", str(broken), "--explainers", "oracle", "--cache-dir", str(tmp_path / "cache"),
                   "--out", str(tmp_path / "out"), "--quiet", "--executor", "local"])
    err = capsys.readouterr().err
    assert rc != 0 and "cnn-rho0.95-s0" in err and "training is forbidden" in err
    assert not list((tmp_path / "cache" / "subjects").glob("*/model.safetensors")) or \
        len(list((tmp_path / "cache" / "subjects").glob("*/model.safetensors"))) == 1  # only the shipped one


def test_a_tampered_file_is_refused_naming_it(made, tmp_path, capsys):
    _, rel = made
    bad = _copy(rel, tmp_path / "rel")
    weights = next((bad / "cache" / "subjects").glob("*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    rel_path = weights.relative_to(bad).as_posix()
    with pytest.raises(ReleaseError, match=rel_path):
        release.open_release(bad)
    rc = cli.main(["release", "verify", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and rel_path in err and "sha256" in err and "Traceback" not in err
    weights.write_bytes(bytes(data[:-1]))  # a size change is named too
    with pytest.raises(ReleaseError, match="bytes, the manifest records"):
        release.open_release(bad)


def test_version_mismatches_are_refused_naming_them(made, tmp_path):
    _, rel = made
    bad = _copy(rel, tmp_path / "rel")
    _rewrite(bad, lambda m: m["tasks"]["waterbirds-spurious"].update(version=999))
    with release.open_release(bad) as opened, pytest.raises(ReleaseError, match=r"tasks\.waterbirds-spurious\.version"):
        release.check_compatible(opened.manifest)
    _rewrite(bad, lambda m: m["fexbench"].update(requires=">=99.0,<100"))
    with release.open_release(bad) as opened, pytest.raises(ReleaseError, match=r"fexbench\.requires.*99\.0"):
        release.check_compatible(opened.manifest)
    _rewrite(bad, lambda m: m.update(format_version=2))
    with pytest.raises(ReleaseError, match="format_version"):
        release.open_release(bad)
    rc = cli.main(["run", "--release", str(bad), "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")])
    assert rc == 2


@pytest.mark.parametrize("edit, message", [
    (lambda a: a.update(path="../outside.json"), "unsafe path"),
    (lambda a: a.update(path="/etc/passwd"), "unsafe path"),
    (lambda a: a.update(cache_path="worlds/x", path="cache/worlds/x"), "cache_path"),
    (lambda a: a.update(path="cache/subjects/other/model.safetensors"), "is not a file of"),
    (lambda a: a.update(sha256="0" * 63), "sha256"),
    (lambda a: a.update(size=-1), "size"),
])
def test_hostile_manifest_entries_are_refused_naming_the_field(made, tmp_path, edit, message):
    _, rel = made
    bad = _copy(rel, tmp_path / "rel")

    def change(m):
        edit(next(a for a in m["artefacts"] if a["role"] == "subject"))
    _rewrite(bad, change)
    with pytest.raises(ReleaseError, match=message):
        release.open_release(bad)


def test_a_symlink_in_the_release_is_refused(made, tmp_path):
    _, rel = made
    bad = _copy(rel, tmp_path / "rel")
    card = next((bad / "cache" / "subjects").glob("*/card.json"))
    outside = tmp_path / "outside.json"
    outside.write_bytes(card.read_bytes())
    card.unlink()
    card.symlink_to(outside)
    with pytest.raises(ReleaseError, match="not a regular file"):
        release.open_release(bad)


def test_archives_open_and_unsafe_members_are_refused(made, tmp_path):
    _, rel = made
    tar = rel.with_name("rel.tar")
    with release.open_release(tar) as opened:
        assert opened.manifest.digest == release.read_manifest(rel).digest
        temp = opened.temp
    assert temp is not None and not temp.exists()  # unpacked copy removed
    archive = tmp_path / "rel.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in rel.rglob("*") if p.is_file()):
            zf.write(path, f"wrapped/{path.relative_to(rel).as_posix()}")
    with release.open_release(archive) as opened:  # one top folder around everything is fine
        assert opened.manifest.digest == release.read_manifest(rel).digest
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        t.add(rel / "manifest.json", "manifest.json")
        link = tarfile.TarInfo("cache/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
    with pytest.raises(ReleaseError, match="not a regular file"):
        release.open_release(evil)
    escape = tmp_path / "escape.tar"
    with tarfile.open(escape, "w") as t:
        t.add(rel / "manifest.json", "../manifest.json")
    with pytest.raises(ReleaseError, match="unsafe path"):
        release.open_release(escape)
    with pytest.raises(ReleaseError, match="unpacks to more than"):
        release.open_release(tar, limit=1000)


def test_a_release_by_url_is_downloaded_bounded_from_loopback(made, tmp_path, capsys):
    _, rel = made
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(rel.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rel.tar"
        with release.open_release(url) as opened:
            assert opened.manifest.digest == release.read_manifest(rel).digest
        assert cli.main(["release", "verify", url]) == 0
        assert release.read_manifest(rel).digest in capsys.readouterr().out
        with pytest.raises(ReleaseError, match="at most 1000 bytes"):
            release.open_release(url, limit=1000)
        with pytest.raises(ReleaseError, match="cannot download"):
            release.open_release(url + ".missing")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_machine_that_renders_differently_is_told_which_split(made, tmp_path):
    root, rel = made
    manifest = release.read_manifest(rel)
    results, _ = read_results_dir(root / "out")
    checker = release.ReleaseRun(manifest, str(rel))
    probe = results[0]
    changed = replace(probe, hashes={**probe.hashes, "probe": "f" * 64})
    with pytest.raises(ReleaseError, match="rendered split waterbirds-spurious/replicate-0/probe"):
        checker.finish([changed], tmp_path / "out", tmp_path / "cache")
    assert not (tmp_path / "out").exists()  # nothing marked as the release's


def test_placing_replaces_a_differing_cache_entry_and_keeps_a_matching_one(made, tmp_path):
    root, rel = made
    cache = tmp_path / "cache"
    with release.open_release(rel) as opened:
        assert release.place(opened, cache) == 3  # two subjects and their base network
        weights = next((cache / "subjects").glob("*/model.safetensors"))
        weights.write_bytes(b"trained here")  # a locally trained stand-in with the same key
        from fexbench.core.cache import seal
        seal(weights.parent)
        assert release.place(opened, cache) == 1
        assert release.place(opened, cache) == 0
    from fexbench.core.cache import file_sha256
    assert file_sha256(weights) == file_sha256(rel / "cache" / weights.relative_to(cache))


def test_train_false_forbids_training_naming_the_subject(tmp_path, capsys):
    text = TINY.replace("replicates = 1", "replicates = 1\ntrain = false")
    (tmp_path / "tiny.toml").write_text(text)
    rc = cli.main(["run", "--config", str(tmp_path / "tiny.toml"), "--explainers", "oracle", "--cache-dir",
                   str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--quiet", "--executor", "local"])
    err = capsys.readouterr().err
    assert rc != 0 and "cnn-rho0.5-s0" in err and "train = false" in err


def test_version_ranges():
    assert release.in_range("0.1.0", ">=0.1.0,<0.2")
    assert not release.in_range("0.2.0", ">=0.1.0,<0.2")
    assert release.default_range("0.1.3") == ">=0.1.3,<0.2"
    with pytest.raises(ReleaseError, match="fexbench.requires"):
        release.in_range("0.1.0", "~0.1")
