"""One story about the defaults (issue #28, item 7): `fexbench run --help`, the docs, the shipped
default config and the presets say the same thing as the code. Each side is read where it is
written (the help as printed, the docs' table and sentences as text, the presets as TOML), so
changing one side alone fails here."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fexbench import presets
from fexbench.cli import main
from fexbench.core import registry
from fexbench.harness.config import RunSection, default_config, load_config

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
         "ten": 10}
NUM = r"(\d+|" + "|".join(WORDS) + r")"
DEFAULT_REPLICATES = RunSection.model_fields["replicates"].default


def _number(text: str) -> int:
    return int(text) if text.isdigit() else WORDS[text.lower()]


def _help(argv: list[str], capsys) -> str:
    """The help text as printed, one line (argparse wraps lines, also after a hyphen)."""
    with pytest.raises(SystemExit):
        main(argv)
    return re.sub(r"-\s+(?=\w)", "-", " ".join(capsys.readouterr().out.split()))


def _release_design(name: str) -> dict:
    """The design a shipped release runs (fexbench.releases; its manifest.json, read as the release
    reader reads it)."""
    import tarfile

    from fexbench import releases
    from fexbench.harness.release import parse_manifest

    with tarfile.open(releases.path(name)) as archive:
        member = next(m for m in archive.getmembers() if m.name.lstrip("./") == "manifest.json")
        return dict(parse_manifest(archive.extractfile(member).read()).design)


def _config_replicates(config) -> dict[str, int]:
    """Each task's replicates in a run config: its per-task number, else its [run] replicates, or
    the replicates of the release it runs on (fexbench.harness.release.release_config)."""
    replicates = config.run.replicates
    if config.run.release:
        replicates = _release_design(config.run.release)["run"].get("replicates", DEFAULT_REPLICATES)
    return {task: config.run.task_replicates.get(task, replicates) for task in config.task_names()}


def _replicates(name: str) -> dict[str, int]:
    """Each task's replicates in preset `name`."""
    return _config_replicates(load_config(presets.path(name), lint=True))


# -- run --help --------------------------------------------------------------------------------------
def test_run_help_states_the_default_replicates_explainers_and_tasks(capsys):
    text = _help(["run", "--help"], capsys)
    found = re.search(r"--replicates R .*?\(default (\d+)", text)
    assert found and int(found.group(1)) == DEFAULT_REPLICATES == RunSection().replicates, text
    listed = re.search(r"--explainers EXPLAINERS .*?default: the built-in explainers: ([^;)]*)", text)
    assert listed, text
    named = [n.strip() for n in listed.group(1).split(",")]
    assert named == default_config().explainer_names() == sorted(registry.explainers.builtin_names())
    assert re.search(r"--tasks TASKS .*?default: every registered task", text), text
    assert default_config().task_names() == registry.tasks.names()
    # the command list of `fexbench --help` says the same
    top = _help(["--help"], capsys)
    summary = re.search(r"default: every registered task, the built-in explainers, (\d+) replicates", top)
    assert summary and int(summary.group(1)) == DEFAULT_REPLICATES, top


def test_run_help_states_each_presets_replicates(capsys):
    text = _help(["run", "--help"], capsys)
    for name in presets.names():
        per_task = set(_replicates(name).values())
        release = load_config(presets.path(name), lint=True).run.release
        if release and f"{name} (" in text and f"the replicates of release {release}" in text:
            continue  # the release's design runs, whatever its number (test_the_shipped_default_release...)
        found = re.search(rf"\b{name} \([^)]*?(\d+)(?:-(\d+))? replicates?( per task)?\)", text)
        assert found, f"--preset's help does not state {name}'s replicates: {text}"
        low, high = int(found.group(1)), int(found.group(2) or found.group(1))
        assert (low, high) == (min(per_task), max(per_task)), (name, found.group(0))


# -- the shipped default config ----------------------------------------------------------------------
def test_default_toml_equals_the_built_in_default():
    path = ROOT / "datasets" / "configs" / "default.toml"
    shipped, embedded = load_config(path), default_config()
    assert shipped.run == embedded.run
    assert shipped.task_names() == embedded.task_names()
    assert shipped.explainer_names() == embedded.explainer_names()
    assert tomllib.loads(path.read_text())["run"]["replicates"] == DEFAULT_REPLICATES
    for name, options in shipped.task_configs().items():  # spelled-out options are the constructors' defaults
        cls = registry.tasks.get(name)
        assert cls(**options).config() == cls().config(), name
    for name, options in shipped.explainer_configs().items():
        cls = registry.explainers.get(name)
        assert cls(**options).config() == cls().config(), name


# -- the docs' table ---------------------------------------------------------------------------------
def _table() -> dict[str, dict[str, str]]:
    """The rows of docs/configuration.md#defaults, keyed "default" or the preset's name."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split('<a id="defaults"></a>', 1)[1].split("\n## ", 2)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        preset = re.match(r"`--preset (\S+)`", cells["run"])
        rows[preset.group(1) if preset else "default" if cells["run"].startswith("default") else cells["run"]] = cells
    return rows


def _documented_replicates(cell: str, tasks: list[str]) -> dict[str, int]:
    if cell.isdigit():
        return {task: int(cell) for task in tasks}
    found = re.fullmatch(r"per task: (.*?) \(any other task (\d+)\)", cell)
    assert found, f"replicates cell not understood: {cell!r}"
    named = {name: int(n) for name, n in (item.rsplit(" ", 1) for item in found.group(1).split(", "))}
    return {task: named.get(task, int(found.group(2))) for task in tasks}


def _names(cell: str) -> list[str]:
    return sorted(n.strip().strip("`") for n in cell.split(":", 1)[-1].split(","))


def test_docs_table_is_the_default_and_every_preset():
    rows = _table()
    missing = sorted({"default", *presets.names()} - set(rows))
    assert not missing, f"docs/configuration.md#defaults has no row for {missing}"
    assert set(rows) == {"default", *presets.names()}, f"rows for no preset: {sorted(set(rows) - set(presets.names()))}"
    configs = {"default": default_config(), **{n: load_config(presets.path(n), lint=True) for n in presets.names()}}
    for name, config in configs.items():
        row = rows[name]
        if row["tasks"] == "every registered task":
            assert config.run.tasks in (None, tuple(registry.tasks.names())), name
        else:
            assert _names(row["tasks"]) == sorted(config.task_names()), name
        if row["explainers"].startswith("the built-in explainers"):
            assert sorted(config.explainer_names()) == sorted(registry.explainers.builtin_names()), name
        if ":" in row["explainers"] or not row["explainers"].startswith("the built-in explainers"):
            assert _names(row["explainers"]) == sorted(config.explainer_names()), name
        assert _documented_replicates(row["replicates"], config.task_names()) == _config_replicates(config), name
        seeds = row["explainer seeds"]
        assert config.run.explainer_seeds == (0 if seeds == "each explainer's own" else int(seeds)), name
    assert int(rows["default"]["replicates"]) == DEFAULT_REPLICATES


def test_the_shipped_default_release_has_the_default_design():
    """Plain `fexbench run` may score on the shipped default release (fexbench.releases), whose
    design then runs: it must be the default the help and the docs state."""
    from fexbench import releases

    if "default" not in releases.names():
        pytest.skip("no shipped default release")
    design = _release_design("default")["run"]
    assert design.get("replicates", DEFAULT_REPLICATES) == DEFAULT_REPLICATES
    assert design.get("seed", 0) == RunSection().seed


# -- what the prose says -----------------------------------------------------------------------------
def _sentences():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in files:
        for paragraph in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            if paragraph.lstrip().startswith("|"):  # tables: the defaults' table is checked above
                cells = [c for line in paragraph.splitlines() for c in line.split("|")]
                yield from ((path, " ".join(c.split())) for c in cells)
                continue
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z`(*\[])", " ".join(paragraph.split())):
                yield path, sentence


def _preset_claims(sentence: str) -> list[tuple[int, int]]:
    """(low, high) replicates a sentence states: "5 to 37 replicates", or "N replicate(s)"."""
    claims = []
    for low, high in re.findall(NUM + r" to " + NUM + r"\*{0,2} replicates\b", sentence, re.I):
        claims.append((_number(low), _number(high)))
    rest = re.sub(NUM + r" to " + NUM + r"\*{0,2} replicates\b", "", sentence, flags=re.I)
    claims += [(_number(n), _number(n)) for n in re.findall(r"\b" + NUM + r"\*{0,2} replicates?\b", rest, re.I)]
    return claims


DEFAULT_CLAIM = re.compile(r"(?:embedded default|default run|default design|default's|`fexbench run` \(|"
                           r"the default: )[^.;|]{0,80}?\b" + NUM + r"\*{0,2} replicates", re.I)


def test_every_sentence_about_a_presets_or_the_defaults_replicates_matches():
    seen = {name: 0 for name in ["default", *presets.names()]}
    wrong = []
    for path, sentence in _sentences():
        named = [n for n in presets.names() if re.search(rf"--preset {n}\b|`{n}` preset|\b{n} preset", sentence)]
        if len(named) == 1 and "per task:" not in sentence:
            per_task = _replicates(named[0]).values()
            for claim in _preset_claims(sentence):
                seen[named[0]] += 1
                if claim != (min(per_task), max(per_task)):
                    wrong.append(f"{path.name}: {named[0]} has {min(per_task)}-{max(per_task)}, not {claim}: {sentence}")
        elif not named:
            for n in DEFAULT_CLAIM.findall(sentence):
                seen["default"] += 1
                if _number(n) != DEFAULT_REPLICATES:
                    wrong.append(f"{path.name}: the default has {DEFAULT_REPLICATES}, not {n}: {sentence}")
    assert not wrong, "\n".join(wrong)
    # the check is not blind: it found what the docs say about the default's and presets' replicates
    assert seen["default"] and sum(seen.values()) > seen["default"], seen


def test_preset_files_say_what_they_set():
    """A preset's own comments (its description in `fexbench list` among them) state no other number."""
    for name in presets.names():
        per_task = _replicates(name).values()
        comments = " ".join(line.split("#", 1)[1] for line in presets.path(name).read_text().splitlines()
                            if "#" in line)
        for claim in _preset_claims(comments.replace("--replicates R", "")):
            assert claim == (min(per_task), max(per_task)), (name, claim, comments)


def test_every_run_key_has_a_flag_that_reaches_the_run(tmp_path, monkeypatch):
    """Every [run] key can be given on the command line: a hand-written flag or one generated from
    its field; a generated flag's value reaches the run's environment."""
    from fexbench import cli
    from fexbench.cli import run as run_cli
    from fexbench.harness import driver
    from fexbench.harness.config import RunSection

    options = {o for a in cli.build_parser()._subparsers._group_actions[0].choices["run"]._actions
               for o in a.option_strings}
    for key in RunSection.model_fields:
        flag = run_cli.HAND_WRITTEN.get(key, "--" + key.replace("_", "-"))
        assert flag in options, f"[run] {key} has no flag"
    seen = {}

    class Stop(Exception):
        pass

    def capture(tasks, explainers, env, **kwargs):
        seen["env"] = env
        raise Stop
    monkeypatch.setattr(driver, "run", capture)
    with pytest.raises(Stop):
        cli.main(["run", "--preset", "smoke", "--tasks", "sanity-randomization", "--explainers", "random",
                  "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--job-memory-limit-mb", "4096",
                  "--task-replicates", "sanity-randomization=2", "--no-amp", "--batch-size", "8"])
    env = seen["env"]
    assert env.job_memory_limit_mb == 4096 and env.replicates_for("sanity-randomization") == 2
    assert env.amp is False and env.batch_size == 8
