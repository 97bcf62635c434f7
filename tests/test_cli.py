"""The command line: every --help example runs as written, listing stays light and survives broken
plugins, results go to stdout and logs to stderr, Ctrl-C ends in one line, word clouds."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from fexbench.core import registry
from fexbench import cli

TINY = """
[run]
replicates = 1
tasks = ["waterbirds-spurious"]
explainers = ["random", "class-name", "oracle"]

[tasks.waterbirds-spurious]
rhos = [0.5, 0.95]
seeds = [0]
n_train = 160
n_probe = 48
n_test = 48
epochs = 1
n_bootstrap = 20

[explainers.random]
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.toml").write_text(TINY)
    return root


def help_examples() -> list[str]:
    """Every line of every `examples:` block of the parser and its subcommands."""
    parser = cli.build_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    lines = []
    for p in parsers:
        epilog = p.epilog or ""
        if "examples:" in epilog:
            block = epilog.split("examples:", 1)[1]
            lines += [line.strip() for line in block.splitlines() if line.strip().startswith("fexbench ")]
    return lines


def test_the_help_has_examples():
    examples = help_examples()
    assert any(e.startswith("fexbench run ") for e in examples)
    assert any(e.startswith("fexbench explain ") for e in examples)


@pytest.mark.parametrize("example", help_examples())
def test_every_help_example_runs_as_written(example, tiny_config, monkeypatch, capsys):
    """Each example, with a tiny config and a private cache added (so it takes seconds)."""
    monkeypatch.chdir(tiny_config)
    monkeypatch.setenv("FEXBENCH_LIST_CACHE", str(tiny_config / "list.json"))
    argv = shlex.split(example)[1:]
    if argv[0] in ("run", "explain"):
        argv += ["--config", "tiny.toml", "--cache-dir", "cache"]
    if argv[0] == "run":
        argv += ["--out", "out"]
        if "--threads" in argv:  # a resumed result keeps the thread count of the run that computed it
            argv += ["--no-resume"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    if argv[0] == "run":
        assert "== waterbirds-spurious ==" in out and "wall time" in out
        assert "[waterbirds-spurious]" not in out and "[waterbirds-spurious] oracle: ok" in err  # logs: stderr
        if "--profile" in argv:
            assert "prepare waterbirds-spurious / subjects" in out and "oracle on waterbirds-spurious" in out
        if "--threads" in argv:
            result = json.loads((tiny_config / "out" / "waterbirds-spurious" / "oracle.json").read_text())
            assert result["config"]["threads"]["run"] == int(argv[argv.index("--threads") + 1])
    if "--png" in argv:
        from PIL import Image
        png = tiny_config / argv[argv.index("--png") + 1]
        assert Image.open(png).size[1] > 360  # the cloud plus its title
        assert "word cloud:" in out


def test_explain_names_the_subjects_when_one_does_not_exist(tiny_config, monkeypatch, capsys):
    monkeypatch.chdir(tiny_config)
    rc = cli.main(["explain", "--explainer", "oracle", "--subject", "cnn-rho0.995-s0", "--target", "round",
                   "--config", "tiny.toml", "--cache-dir", "cache", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "cnn-rho0.995-s0" in err and "cnn-rho0.95-s0" in err and "Traceback" not in err


def test_list_and_help_do_not_import_torch(tmp_path):
    """`fexbench --help` never, and `fexbench list` once its listing is cached, import torch,
    transformers or open_clip (they cost seconds)."""
    env = {**os.environ, "FEXBENCH_LIST_CACHE": str(tmp_path / "list.json"), "OMP_NUM_THREADS": "1"}
    check = ("import sys\nfrom fexbench.cli import main\ntry:\n    rc = main({argv})\n"
             "except SystemExit as exc:\n    rc = exc.code\n"
             "print('HEAVY', [m for m in ('torch', 'transformers', 'open_clip') if m in sys.modules])\nsys.exit(rc)")
    subprocess.run([sys.executable, "-c", check.format(argv=["list"])], env=env, check=True, capture_output=True)
    for argv in (["list"], ["--help"]):
        done = subprocess.run([sys.executable, "-c", check.format(argv=argv)], env=env, capture_output=True, text=True)
        assert "HEAVY []" in done.stdout, (argv, done.stdout[-500:], done.stderr[-2000:])


def test_the_shipped_listing_is_the_codes():
    """`fexbench list` reads the built-ins' listing from a file shipped with the package (no imports,
    even on a fresh install); it must say what the code says. If this fails, regenerate it with
    `python -m fexbench.harness.listing --write`."""
    from fexbench.harness import listing

    saved = json.loads(listing.SHIPPED.read_text(encoding="utf-8"))
    assert saved["entries"] == listing.entry_targets()
    assert saved["listing"] == json.loads(json.dumps(listing.build())), \
        "stale builtin_listing.json: run python -m fexbench.harness.listing --write"
    assert listing.shipped() == saved["listing"]


def test_list_shows_a_broken_plugin_without_failing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FEXBENCH_LIST_CACHE", str(tmp_path / "list.json"))
    real = registry.explainers._entry_points

    def with_broken():
        found = real()
        found["broken-plugin"] = [EntryPoint("broken-plugin", "no_such_module_here:Explainer", "fexbench.explainers")]
        return found

    monkeypatch.setattr(registry.explainers, "_entry_points", with_broken)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "broken plugins" in out and "broken-plugin" in out and "no_such_module_here:Explainer" in out
    assert "ModuleNotFoundError" in out and "oracle" in out  # the others are still listed
    assert not (tmp_path / "list.json").exists()  # a listing with a broken entry is never cached


def test_ctrl_c_ends_in_one_line_with_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    from fexbench.cli import ls

    monkeypatch.setattr(ls, "cmd_list", interrupted)
    assert cli.main(["list"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err


def test_equal_weights_are_drawn_at_equal_sizes():
    from fexbench.report.wordcloud_png import cloud_layout

    weights = {f"word{i}": 1.0 for i in range(30)} | {f"big{i}": 3.0 for i in range(5)}
    sizes = {word: size for (word, _), size, *_ in cloud_layout(weights, 640, 360).layout_}
    assert set(sizes) == set(weights)
    assert len({sizes[w] for w in weights if weights[w] == 1.0}) == 1
    assert len({sizes[w] for w in weights if weights[w] == 3.0}) == 1
    assert sizes["big0"] == pytest.approx(3 * sizes["word0"], abs=3)


def test_the_cloud_title_states_the_measured_ground_truth():
    from fexbench.report.wordcloud_png import cloud_title

    title = cloud_title("falcon", "cnn-rho0.95-s0", "round", "waterbirds-spurious",
                        {"rho": 0.95, "reliance": 0.9512, "biased": True, "per_class": [1, 2]})
    assert title == ("falcon on cnn-rho0.95-s0, target round (waterbirds-spurious); "
                     "measured: rho 0.95, reliance 0.951, biased True")
