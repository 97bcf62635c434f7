"""Every file a reader of run folders opens is treated as hostile (issue #29): FIFOs, devices and
huge files named *.json, results hidden under metadata names, statistics naming modules to import,
and text that hides or reorders what a reader sees. Each case fails on the code before the fix."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from fexbench.cli import main
from fexbench.core import results, schema
from fexbench.core.cache import atomic_write_text
from fexbench.core.metrics import Metric, MetricValue
from fexbench.core.results import JobResult, ResultsError, read_result, read_results_dir, validate_dir, write_result
from fexbench.core.text import display_text

METRIC = Metric("m", "d", True, (0.0, 1.0), "cat", 0.5)
UNIT_VALUES = {"m": {"statistic": "fexbench.core.metrics:nanmean", "replicates": [[[[0.0, 1.0, 1.0, 0.0]]]]}}


def _result(**kw) -> JobResult:
    base = dict(task="t", explainer="e", oracle=False, status="ok", job_key="k", seed=3,
                metrics=(MetricValue.of(METRIC, 0.7, (0.6, 0.8), 10),))
    base.update(kw)
    return JobResult(**base)


def _rewrite(path: Path, mutate, name: str | None = None) -> Path:
    """The result at `path` edited by `mutate`, digest recomputed (a hostile file is well sealed),
    written under `name` in the same folder when given."""
    data = json.loads(path.read_text())
    mutate(data)
    data["digest"] = results.canonical_digest(data)
    target = path.with_name(name) if name else path
    atomic_write_text(target, json.dumps(data))
    return target


class _Blocked(Exception):
    pass


@contextmanager
def _no_hang(seconds: int = 20):
    """Fail (instead of hanging the suite) when the body blocks, as reading a FIFO used to: a
    watchdog thread signals the main thread itself (a process alarm may land on another thread
    and leave the main thread blocked in open())."""
    def boom(*_):  # not an OSError, which a reader would catch and go on to block again
        raise _Blocked(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    main_thread = threading.get_ident()
    watchdog = threading.Timer(seconds, lambda: signal.pthread_kill(main_thread, signal.SIGALRM))
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
        signal.signal(signal.SIGALRM, old)


# --- 1. only regular files under a size bound are read ------------------------------------------

def _plant(kind: str, path: Path) -> str:
    if kind == "dev-zero-symlink":
        path.symlink_to("/dev/zero")
        return "a symlink to a character device, not a regular file"
    if kind == "fifo":
        os.mkfifo(path)
        return "a FIFO (named pipe), not a regular file"
    if kind == "padded-1GiB":
        with open(path, "wb") as f:  # sparse: 1 GiB on paper, nothing on disk
            f.write(b'{"task": "t"}')
            f.truncate(2 ** 30)
        return "1.0 GiB, over the 64.0 MiB limit"
    raise AssertionError(kind)


KINDS = ["dev-zero-symlink", "fifo", "padded-1GiB"]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_kinds_are_one_named_line_in_validate(tmp_path, capsys, kind):
    run = tmp_path / "run"
    good = write_result(run, _result())
    bad = good.with_name("hostile.json")
    why = _plant(kind, bad)
    with _no_hang():
        code = main(["validate", str(run)])
    out = capsys.readouterr().out
    assert code == 1, out
    lines = [line for line in out.splitlines() if str(bad) in line]
    assert lines == [f"{bad}: refused: {why}"], out
    assert "2 result file(s) checked" in out and "1 invalid" in out


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_kinds_are_skipped_with_a_reason_by_readers(tmp_path, kind):
    run = tmp_path / "run"
    write_result(run, _result())
    bad = run / "t" / "hostile.json"
    why = _plant(kind, bad)
    with _no_hang():
        found, problems = read_results_dir(run)
        with pytest.raises(ResultsError, match="refused"):
            read_result(bad)
    assert [r.explainer for r in found] == ["e"]  # the good file is not lost
    assert problems == [f"skipped {bad}: refused: {why}"]


def test_a_symlink_to_a_regular_result_is_still_read(tmp_path):
    path = write_result(tmp_path / "run", _result())
    link = path.with_name("linked.json")
    link.symlink_to(path)
    assert read_result(link) == read_result(path)


def test_a_file_growing_past_the_bound_is_not_read_whole(tmp_path, monkeypatch):
    from fexbench.core import cache

    path = write_result(tmp_path / "run", _result())
    assert cache.read_regular_file(path, 10 ** 6) == path.read_bytes()
    with pytest.raises(cache.UnsafeFile, match="over the 100 bytes limit"):
        cache.read_regular_file(path, 100)


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["explanations"]["s"][0].update(concepts=[["w", 0.1]] * 1001),
     "explanations.s[0].concepts: 1001 concepts, over the limit of 1000"),
    (lambda d: d["explanations"]["s"][0].update(concepts=[["w" * 201, 0.1]]),
     "explanations.s[0].concepts[0]: a word of 201 characters, over the limit of 200"),
    (lambda d: d["explanations"]["s"][0].update(evidence=["x" * 2001]),
     "explanations.s[0].evidence[0]: 2001 characters, over the limit of 2000"),
    (lambda d: d["explanations"]["s"][0].update(concepts=[{"word": "w"}]),
     "explanations.s[0].concepts[0]: expected [word, weight]"),
    (lambda d: d.update(explainer="e" * 201), "explainer: 201 characters, over the limit of 200"),
])
def test_oversized_explanations_and_names_are_named(tmp_path, mutate, field):
    entry = {"target": "unit:1", "concepts": [["dog", 0.5], ["cat", None]], "evidence": ["seen"]}
    path = write_result(tmp_path / "run", _result(explanations={"s": [entry]}))
    assert results.validate_file(path) == []
    _rewrite(path, mutate)
    with pytest.raises(ResultsError, match=f"{path}.*" + field.replace("[", r"\[").replace("]", r"\]")):
        read_result(path)
    assert any(field in p for p in results.validate_file(path))


# --- 2. every result-like JSON in a run folder is validated, whatever its name -----------------

@pytest.mark.parametrize("name", ["timing.json", "run-config.json", "environment.json"])
def test_results_named_like_metadata_inside_a_task_folder_are_validated(tmp_path, capsys, name):
    run = tmp_path / "run"
    good = write_result(run, _result())
    atomic_write_text(run / "run-config.json", json.dumps({"run": {}}))  # real metadata: not a result
    atomic_write_text(run / "timing.json", json.dumps({"tasks": {}}))
    hidden = _rewrite(good, lambda d: d.update(explainer="hidden"), name)
    n, found = validate_dir(run)
    assert n == 2 and found == []
    assert {r.explainer for r in read_results_dir(run)[0]} == {"e", "hidden"}  # what publish reads
    _rewrite(hidden, lambda d: d["metrics"][0].update(value=7.0))  # a bad one is named
    assert main(["validate", str(run)]) == 1
    assert f"{hidden}: metrics[0] (m).value: 7.0 is outside" in capsys.readouterr().out


def test_metadata_of_run_folders_in_a_folder_of_runs_is_not_a_result(tmp_path):
    root = tmp_path / "runs"
    for run in ("a", "b"):
        write_result(root / run, _result())
        atomic_write_text(root / run / "run-config.json", json.dumps({"run": {}}))
        atomic_write_text(root / run / "timing.json", json.dumps({"tasks": {}}))
    assert validate_dir(root) == (2, [])


def test_a_result_shaped_metadata_file_is_validated_wherever_it_is(tmp_path):
    """A run folder stripped of its own metadata looks like a folder of runs; a timing.json in one
    of its task folders that a reader would take as a result is still checked."""
    run = tmp_path / "run"
    good = write_result(run, _result())
    hidden = _rewrite(good, lambda d: (d.update(explainer="hidden"), d["metrics"][0].update(value=7.0)), "timing.json")
    n, found = validate_dir(run)
    assert n == 2 and any(str(hidden) in p and "outside" in p for p in found)


# --- 3. statistics come from a registry of fexbench's functions, never from an import path -----

def test_a_statistic_naming_a_module_is_refused_and_nothing_is_imported(tmp_path, monkeypatch, capsys):
    from fexbench.harness.pooling import load_statistic, replicated_from_result

    marker = tmp_path / "imported"
    (tmp_path / "evil_stat.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef boom(*a, **k):\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_stat", raising=False)
    path = write_result(tmp_path / "run", _result(unit_values=UNIT_VALUES))
    _rewrite(path, lambda d: d["unit_values"]["m"].update(statistic="evil_stat:boom"))
    with pytest.raises(ResultsError, match=f"{path}: .*unit_values.m.statistic: 'evil_stat:boom' is not a registered"):
        read_result(path)
    assert main(["validate", str(tmp_path / "run")]) == 1
    assert "unit_values.m.statistic: 'evil_stat:boom' is not a registered statistic" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a registered statistic"):
        replicated_from_result({"m": {**UNIT_VALUES["m"], "statistic": "evil_stat:boom"}}, "m")
    for name in ("os:system", "builtins:eval", "fexbench.core.cache:discard"):
        with pytest.raises(ValueError, match="not a registered statistic"):
            load_statistic(name)
    assert not marker.exists() and "evil_stat" not in sys.modules


def test_stored_statistic_names_of_existing_files_still_resolve():
    from fexbench.core import metrics, stats
    from fexbench.harness.pooling import load_statistic, statistic_path

    assert load_statistic("fexbench.core.metrics:nanmean") is stats.nanmean
    assert load_statistic("fexbench.core.stats:nanmean") is stats.nanmean
    assert load_statistic("fexbench.core.metrics:spearman") is metrics.spearman
    assert load_statistic("fexbench.core.metrics:auroc") is metrics.auroc
    assert statistic_path(stats.nanmean) == "fexbench.core.metrics:nanmean"  # as every published file has it
    with pytest.raises(ValueError, match="is not registered"):
        statistic_path(lambda x: x)


def test_a_task_may_register_a_statistic_of_its_own():
    from fexbench.harness.pooling import load_statistic, statistic_path

    name = schema.register_statistic(_median)
    assert name == f"{__name__}:_median" and statistic_path(_median) == name and load_statistic(name) is _median
    with pytest.raises(ValueError, match="module-level"):
        schema.register_statistic(lambda x: x)


def _median(x, axis=-1):
    import numpy as np

    return np.median(x, axis=axis)


# --- 4. text that hides or reorders what a reader sees is stripped everywhere it is shown -----

HOSTILE = "ora\u202ecle\u200b\u2066x\u2069\u200f\ufeff\x1b[31mred\x1b[0m\u061c\x9b2J|<b>"


def test_display_text_strips_bidi_zero_width_and_control_characters():
    assert display_text(HOSTILE) == "oraclexred|<b>"
    assert display_text(HOSTILE, markdown=True) == "oraclexred\\|&lt;b&gt;"
    assert display_text("two\nlines\ttab") == "two lines tab"
    for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060\ufeff":
        assert display_text(f"a{ch}b") == "ab", hex(ord(ch))


def _registered(**kw) -> JobResult:
    """A result of an installed task (rankings read directions from the registered task)."""
    from fexbench.core import registry

    metric = registry.tasks.get("unit-causes").metrics[0]
    return _result(task="unit-causes", metrics=(MetricValue.of(metric, metric.value_range[0], (metric.value_range[0],) * 2, 10),),
                   **kw)


def test_summary_tables_and_site_markup_show_no_hidden_characters():
    from fexbench.report import leaderboard, markup

    assert leaderboard.clean(HOSTILE) == "oraclexred|<b>"
    assert markup.text(HOSTILE) == "oraclexred|&lt;b&gt;"
    assert "\u202e" not in markup.el("td", HOSTILE, title=HOSTILE)
    r = _registered(explainer="evil\u202eeman\x1b[2J")
    md = leaderboard.markdown([r])
    table = leaderboard.tables([r])["unit-causes"]
    for out in (md, table):
        assert "\u202e" not in out and "\x1b" not in out and "evileman" in out


def test_compare_output_shows_no_hidden_characters():
    from fexbench.analysis.compare import Row, markdown

    row = Row("t\u202e", "e\u200b\x1b[31m", "e\u200b\x1b[31m", "m\u2066|", True, True, 0.5, 0.1, -0.4, -0.5, -0.3,
              0.01, 0.0, "worse", True)
    out = markdown([row], 0.05)
    assert not any(c in out for c in "\u202e\u200b\u2066\x1b"), repr(out)
    assert "m\\|" in out and "REGRESSION" in out


def test_published_site_shows_words_without_hidden_characters(tmp_path):
    from fexbench.report.site import publish

    entry = {"target": "unit:1", "concepts": [["d\u202eog", 0.5], ["c\u200bat", 0.2]],
             "evidence": ["seen \x1b[31min\u2067 red"]}
    write_result(tmp_path / "run", _registered(explanations={"s": [entry]}))
    publish([tmp_path / "run"], tmp_path / "site")
    pages = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "site").rglob("*.html"))
    assert "dog" in pages and not any(c in pages for c in "\u202e\u200b\u2067\x1b")


def test_a_full_disk_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    import errno
    from fexbench import cli
    from fexbench.cli import ls

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "summary.md"))
    monkeypatch.setattr(ls, "cmd_list", full, raising=False)
    parser_func = cli.build_parser().parse_args(["list"]).func
    monkeypatch.setattr(cli, "build_parser", lambda: _Parser(full))
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device writing" in err[0] and "summary.md" in err[0]
    assert callable(parser_func)


class _Parser:
    """A parser whose one command raises what the test gives it."""

    def __init__(self, func):
        self.func = func

    def parse_args(self, argv):
        import argparse
        return argparse.Namespace(command="list", func=self.func)


def test_publish_swaps_the_site_in_one_step_sweeps_leftovers_and_follows_the_umask(tmp_path):
    import os
    import time
    from fexbench.report import site

    out = tmp_path / "site"
    out.mkdir()
    (out / site.MARKER).write_text("old\n")
    (out / "index.html").write_text("old")
    staging = tmp_path / ".site.new"
    staging.mkdir(mode=0o700)
    (staging / site.MARKER).write_text("new\n")
    (staging / "index.html").write_text("new")
    assert site._exchange(staging, out)  # Linux: both paths exist throughout, swapped at once
    assert (out / "index.html").read_text() == "new" and (staging / "index.html").read_text() == "old"
    leftover = tmp_path / ".site.killed"
    leftover.mkdir()
    (leftover / site.MARKER).write_text("x")
    old = time.time() - 2 * site.STALE_S
    os.utime(leftover, (old, old))
    fresh = tmp_path / ".site.live"
    (fresh / "sub").mkdir(parents=True)
    (fresh / site.MARKER).write_text("x")
    site._sweep_stale(out)
    assert not leftover.exists() and fresh.exists()  # a concurrent publish keeps its staging
    mask = os.umask(0o022)
    try:
        site._apply_umask(fresh)
    finally:
        os.umask(mask)
    assert (fresh.stat().st_mode & 0o777) == 0o755 and ((fresh / site.MARKER).stat().st_mode & 0o777) == 0o644


def test_word_cloud_pictures_draw_words_as_shown(tmp_path, monkeypatch):
    """A bidi override or zero-width character in a word is not drawn (the PNG shows "water",
    never "retaw"); words that differ only by hidden characters are drawn once, weights summed."""
    from fexbench.core.contract import Explanation, Target
    from fexbench.report import wordcloud_png

    seen = {}

    def layout(weights, width, height, seed=0):
        seen.update(weights)
        raise StopIteration  # the layout is all this test needs
    monkeypatch.setattr(wordcloud_png, "cloud_layout", layout)
    target = Target("class", "round")
    explanation = Explanation(target, (("\u202ewater", 0.5), ("wa\u200bter", 0.25), ("sky", 0.25)))
    with pytest.raises(StopIteration):
        wordcloud_png.word_cloud_png(explanation, tmp_path / "c.png", title="t\u202eitle")
    assert seen == {"water": 0.75, "sky": 0.25}
