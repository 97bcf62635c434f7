"""The run config: the shipped default equals the embedded one, every mistake is one clear line naming
file and key (before any work), and `fexbench run --config` hands the options to tasks and explainers."""
from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from fexbench.core import registry
from fexbench.cli import main
from fexbench.harness.config import ConfigError, RunSection, default_config, load_config, looks_local
from fexbench.core.contract import Case, Context, Explainer, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from fexbench.core.metrics import Metric, MetricValue
from fexbench.core.registry import resources as resource_registry
from fexbench.core.results import read_result, result_path

CONFIGS = Path(__file__).resolve().parents[1] / "datasets" / "configs"
METRIC = Metric("hits", "share of targets whose top word is the task's word", True, (0.0, 1.0), "toy", 0.0)


class ConfigToyTask(Task):
    name = "config-toy"
    description = "a task that records what it was given"
    metrics = (METRIC,)
    prepared_with: list = []

    def __init__(self, n_subjects: int = 2, rate: float = 0.5, data: dict | None = None,
                 subjects: list[dict] | None = None):
        if data and data.get("source") not in (None, "world", "wilds"):
            raise ValueError(f"data.source must be world or wilds, got {data['source']!r}")
        self.n_subjects, self.rate, self.data, self.subjects = n_subjects, rate, data, subjects

    def prepare(self, env):
        ConfigToyTask.prepared_with.append((self.config(), env))
        probe = Probe(np.zeros((2, 2, 2, 3), np.uint8), np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32),
                      "penultimate", ("a", "b"))
        ctx = Context(probe, vocabulary=("yes", "no"), cache_dir=env.cache_dir)
        cases = tuple(Case(Subject(f"s{i}", None, ("x", "y"), f"w{i}"), ctx, (Target("class", 0, "x"),))
                      for i in range(self.n_subjects))
        return Prepared(cases, {c.subject.name: {} for c in cases}, {"probe": "h"})

    def score(self, prepared, explanations):
        tops = [e.words(1) == ["yes"] for exps in explanations.values() for e in exps]
        return Scored((MetricValue.of(METRIC, float(np.mean(tops)), (0.0, 1.0), len(tops)),), {})


class SaysWord(Explainer):
    name = "says-word"

    def __init__(self, word: str = "no", weight: float = 1.0):
        self.word, self.weight = word, weight

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {self.word: self.weight}) for t in targets]


def toy_resource(env, model: str = "tiny", dim: int = 4):
    return {"model": model, "dim": dim}


@pytest.fixture
def toys():
    registry.register_task("config-toy", ConfigToyTask)
    registry.register_explainer("says-word", SaysWord)
    resource_registry.register("toy-res", toy_resource)
    ConfigToyTask.prepared_with = []
    yield
    registry.tasks.unregister("config-toy")
    registry.explainers.unregister("says-word")
    resource_registry.unregister("toy-res")


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the shipped default ---------------------------------------------------------------------------
def test_default_toml_is_the_embedded_default():
    path = CONFIGS / "default.toml"
    shipped, embedded = load_config(path), default_config()
    assert shipped.run == embedded.run
    assert shipped.task_names() == embedded.task_names() and shipped.explainer_names() == embedded.explainer_names()
    assert shipped.environment() == embedded.environment()
    for name, options in shipped.task_configs().items():  # spelled-out options equal the constructor defaults
        cls = registry.tasks.get(name)
        assert cls(**options).config() == cls().config(), name
    for name, options in shipped.explainer_configs().items():
        cls = registry.explainers.get(name)
        assert cls(**options).config() == cls().config(), name
    # it spells out every [run] key that has a value by default, so it documents them all (a key
    # whose default is "none", such as the job limits, cannot be written in TOML: it is a comment)
    text = path.read_text()
    spelled = set(tomllib.loads(text)["run"])
    optional = {k for k, f in RunSection.model_fields.items() if f.default is None} - spelled
    assert spelled == set(RunSection.model_fields) - optional
    assert all(f"# {k} =" in text for k in optional), "every optional [run] key is documented as a comment"


def test_real_run_recipe_is_a_valid_config():
    """The recipe names data and a GPU that are not here, so paths and the device are not checked; all else is."""
    text = tomllib.loads((CONFIGS / "real-run.toml").read_text())
    # Until every provider takes the recipe's options, say which do not (integration in progress);
    # once they all do, the whole recipe must validate. TODO(lead): drop this guard after integration.
    pending = []
    for kind, reg, skip in (("tasks", registry.tasks, 0), ("resources", resource_registry, 1)):
        for name, options in text.get(kind, {}).items():
            if name not in reg.names():
                pending.append(f"{kind}.{name} (not registered)")
                continue
            params = list(inspect.signature(reg.get(name)).parameters.values())[skip:]
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                pending += [f"{kind}.{name}.{k}" for k in options if k not in {p.name for p in params}]
    if pending:
        pytest.skip(f"options of the recipe not accepted yet: {pending}")
    config = load_config(CONFIGS / "real-run.toml", lint=True)
    assert config.run.device == "cuda" and config.task_names()


# -- options reach the run --------------------------------------------------------------------------
def test_cli_runs_the_config_and_flags_override_it(toys, tmp_path):
    config = write(tmp_path, f"""
[run]
replicates = 1
out = "{tmp_path / 'from-config'}"
cache_dir = "{tmp_path / 'cache'}"
seed = 3
tasks = ["config-toy"]
explainers = ["says-word"]
progress = false

[tasks.config-toy]
n_subjects = 3
rate = 1            # an integer where a float is expected becomes 1.0

[explainers.says-word]
word = "yes"

[resources.toy-res]
model = "big"
""")
    out = tmp_path / "from-flag"
    # in this process (--executor local): the test reads what the task saw from its class
    assert main(["run", "--config", str(config), "--out", str(out), "--seed", "5", "--executor", "local"]) == 0
    (task_config, env), = ConfigToyTask.prepared_with
    assert task_config == {"n_subjects": 3, "rate": 1.0, "data": None, "subjects": None}
    assert isinstance(task_config["rate"], float)
    assert env.seed == 5 and env.out_dir == out and env.cache_dir == tmp_path / "cache" and env.device == "cpu"
    result = read_result(result_path(out, "config-toy", "says-word"))
    assert result.status == "ok" and result.config["explainer"] == {"word": "yes", "weight": 1.0}
    assert result.metrics[0].value == 1.0  # the explainer said "yes" because the config told it to
    assert not (tmp_path / "from-config").exists()
    assert load_config(config).resource_configs() == {"toy-res": {"model": "big"}}


def test_hub_names_and_nested_specs_pass(toys, tmp_path):
    (tmp_path / "wb").mkdir()
    config = load_config(write(tmp_path, f"""
[tasks.config-toy]
data = {{ source = "wilds", root = "{tmp_path / 'wb'}" }}

[[tasks.config-toy.subjects]]
name = "resnet50-head"
backbone = {{ family = "transformers", model = "microsoft/resnet-50" }}
rho = 0.95
seed = 1
mode = "head"

[[tasks.config-toy.subjects]]
backbone = {{ family = "open_clip", model = "ViT-B-32", pretrained = "laion2b_s34b_b79k" }}
"""))
    subjects = config.task_configs()["config-toy"]["subjects"]
    assert subjects[0]["backbone"]["model"] == "microsoft/resnet-50" and len(subjects) == 2


# -- every mistake names file and key ----------------------------------------------------------------
ERRORS = [
    ("[run]\nseeed = 1", "run.seeed: unknown key"),
    ("[run]\nseed = \"one\"", "run.seed: expected an integer, got a string 'one'"),
    ("[run]\nresume = 1", "run.resume: expected true or false"),
    ("[run]\ntasks = [\"config-toy\", \"nope\"]", "run.tasks[1]: unknown task 'nope'"),
    ("[run]\nmax_bad_image_fraction = 1.5", "run.max_bad_image_fraction: must be in [0, 1)"),
    ("[run]\ndevice = \"tpu\"", "run.device: device 'tpu'"),
    ("[colours]\nred = 1", "colours: unknown section"),
    ("[tasks.nope]\nx = 1", "tasks.nope: unknown task 'nope'"),
    ("[tasks.config-toy]\nn_subject = 2", "tasks.config-toy.n_subject: unknown option; options are: n_subjects, rate, data, subjects"),
    ("[tasks.config-toy]\nn_subjects = 2.5", "tasks.config-toy.n_subjects: expected an integer, got a number 2.5"),
    ("[tasks.config-toy]\nrate = \"high\"", "tasks.config-toy.rate: expected a number"),
    ("[tasks.config-toy]\ndata = \"wilds\"", "tasks.config-toy.data: expected a table"),
    ("[tasks.config-toy]\ndata = { source = \"wilds\", root = \"/no/such/waterbirds\" }",
     "tasks.config-toy.data.root: path does not exist: /no/such/waterbirds"),
    ("[[tasks.config-toy.subjects]]\nbackbone = { family = \"keras\", model = \"x\" }",
     "tasks.config-toy.subjects[0].backbone.family: 'keras' is not a model family"),
    ("[[tasks.config-toy.subjects]]\nbackbone = { family = \"timm\", model = \"/no/such/model\" }",
     "tasks.config-toy.subjects[0].backbone.model: path does not exist: /no/such/model"),
    ("[[tasks.config-toy.subjects]]\nbackbone = { family = \"timm\", model = \"resnet50\" }\noptimiser = \"sgd\"",
     "tasks.config-toy.subjects[0].optimiser: unknown key"),
    ("[[tasks.config-toy.subjects]]\nbackbone = { family = \"timm\", model = \"resnet50\" }\nmode = \"some\"",
     "tasks.config-toy.subjects[0].mode: expected one of head, all"),
    ("[explainers.says-word]\nwords = \"yes\"", "explainers.says-word.words: unknown option; options are: word, weight"),
    ("[explainers.nope]", "explainers.nope: unknown explainer 'nope'"),
    ("[resources.nope]", "resources.nope: unknown resource 'nope'"),
    ("[resources.toy-res]\nmodel = 3", "resources.toy-res.model: expected a string, got an integer 3"),
    ("[resources.toy-res]\nenv = 3", "resources.toy-res.env: unknown option; options are: model, dim"),
    ("[run\nseed = 1", "not valid TOML"),
    ("[run]\nexplainer_seeds = -2", "run.explainer_seeds: must be 0 (automatic) to 1000, got -2"),
    ("[run]\nexplainer_seeds = 2.5", "run.explainer_seeds: expected an integer"),
    ("[tasks.config-toy]\ndata = { source = \"imagenet\" }",
     "tasks.config-toy: ValueError: data.source must be world or wilds, got 'imagenet'"),
    ("[tasks.waterbirds-spurious]\nsubjects = \"resnet\"", "tasks.waterbirds-spurious.subjects: expected a list"),
    ("[tasks.waterbirds-spurious]\nsubjects = [1]", "tasks.waterbirds-spurious.subjects[0]: expected a table"),
    ("[tasks.waterbirds-spurious]\nrhos = [0.5, \"x\"]", "tasks.waterbirds-spurious.rhos[1]: expected a number"),
    # nested data specs have typed schemas, checked before any work
    ("[tasks.waterbirds-spurious]\ndata = { rooot = \"x\" }",
     "tasks.waterbirds-spurious.data.rooot: unknown key; keys are source"),
    ("[tasks.waterbirds-spurious]\ndata = { source = \"wilds\", root = \".\", imagesize = 224 }",
     "tasks.waterbirds-spurious.data.imagesize: unknown key; keys are image_size, limit, max_bad_fraction"),
    ("[tasks.waterbirds-spurious]\ndata = { source = \"wilds\", root = \".\", image_size = \"224\" }",
     "tasks.waterbirds-spurious.data.image_size: expected an integer, got a string '224'"),
    ("[tasks.waterbirds-spurious]\ndata = { source = \"wilds\" }", "tasks.waterbirds-spurious.data.root: required key is missing"),
    ("[tasks.waterbirds-spurious]\ndata = { source = \"kaggle\" }",
     "tasks.waterbirds-spurious.data.source: expected one of 'world', 'wilds', 'hf', got a string 'kaggle'"),
    ("[tasks.imagenet9-background]\ndata = { source = \"challenge\", root = \".\", probe_limit = 0 }",
     "tasks.imagenet9-background.data.probe_limit: "),
    # bounded input: seeds, list lengths, nesting
    ("[run]\nseed = -1", "run.seed: must be an integer in [0, 4294967295] (a seed), got -1"),
    ("[run]\nseed = 4294967296", "run.seed: must be an integer in [0, 4294967295]"),
    ("[tasks.waterbirds-spurious]\nseeds = [0, -3]", "tasks.waterbirds-spurious.seeds[1]: must be an integer in [0, 4294967295] (a seed), got -3"),
    ("[tasks.waterbirds-spurious]\nrhos = [" + "0.5," * 10_001 + "]", "tasks.waterbirds-spurious.rhos: 10001 entries; at most 10000"),
    ("[tasks.waterbirds-spurious]\nrhos = " + "[" * 20 + "]" * 20, "nested deeper than 16 levels"),
    ("[run]\nbatch_size = 0", "run.batch_size: must be 1 to 65536, got 0"),
]


@pytest.mark.parametrize("text, expected", ERRORS)
def test_config_errors_name_file_and_key(toys, tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_a_gpu_is_refused_up_front(toys, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"run\.device: device 'cuda' requested but CUDA is not available"):
        load_config(write(tmp_path, "[run]\ndevice = \"cuda\""))
    assert main(["run", "--tasks", "config-toy", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fexbench: error: command line: --device: device 'cuda'") and ConfigToyTask.prepared_with == []


@pytest.mark.parametrize("text", ["[run]\nseeed = 1", "[tasks.config-toy]\ndata = { root = \"/no/such/root\" }"])
def test_cli_prints_one_line_and_exits_2_before_any_work(toys, tmp_path, capsys, text):
    assert main(["run", "--config", str(write(tmp_path, text)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fexbench: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert ConfigToyTask.prepared_with == [] and not (tmp_path / "o").exists()


def test_flags_replace_file_values_before_they_are_checked(toys, tmp_path, capsys):
    path = write(tmp_path, "[run]\ndevice = \"cuda:9\"\ntasks = [\"config-toy\"]\nexplainers = [\"says-word\"]")
    assert load_config(path, overrides={"device": "cpu", "seed": None}).run.device == "cpu"
    assert main(["run", "--config", str(path), "--device", "cpu", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    with pytest.raises(ConfigError, match=r"^command line: --seed: expected an integer"):
        load_config(path, overrides={"seed": "x"})


def test_cli_names_unknown_flag_values(toys, tmp_path, capsys):
    assert main(["run", "--tasks", "config-toy,nope", "--out", str(tmp_path / "o")]) == 2
    assert "command line: --tasks[1]: unknown task 'nope'" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert f"config file {tmp_path / 'missing.toml'} not found" in capsys.readouterr().err


def test_lint_leaves_paths_and_devices_unchecked(toys, tmp_path):
    path = write(tmp_path, "[tasks.config-toy]\ndata = { root = \"/no/such/root\" }")
    assert load_config(path, lint=True).task_configs()["config-toy"]["data"]["root"] == "/no/such/root"
    assert load_config(write(tmp_path, "[run]\ndevice = \"cuda:7\""), lint=True).run.device == "cuda:7"
    with pytest.raises(ConfigError, match="run.device"):
        load_config(write(tmp_path, "[run]\ndevice = \"tpu\""), lint=True)


def test_local_paths_and_hub_names_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    for local in ("/abs/x", "./x", "../x", "~/x", "datasets/wb_hf", "model.safetensors", "local-dir:/m"):
        assert looks_local(local), local
    for hub in ("microsoft/resnet-50", "ViT-B-32", "resnet50.a1_in1k", "hf-hub:timm/resnet50.a1_in1k", "laion2b_s34b_b79k"):
        assert not looks_local(hub), hub


def test_yaml_is_refused_with_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="YAML configs are not supported"):
        load_config(write(tmp_path, "run:\n  seed: 1\n", "run.yaml"))


def test_summary_describes_the_whole_results_folder(toys, tmp_path, capsys):
    """A partial run into a folder keeps the other jobs' rows in summary.md; a corrupt file is named."""
    class SaysYes(SaysWord):
        name = "says-yes"

        def __init__(self, word: str = "yes", weight: float = 1.0):
            super().__init__(word, weight)

    registry.register_explainer("says-yes", SaysYes)
    try:
        out = tmp_path / "o"
        assert main(["run", "--tasks", "config-toy", "--explainers", "says-word", "--out", str(out), "--quiet"]) == 0
        (out / "config-toy" / "broken.json").write_text("{not json")
        assert main(["run", "--tasks", "config-toy", "--explainers", "says-yes", "--out", str(out), "--quiet"]) == 0
    finally:
        registry.explainers.unregister("says-yes")
    captured = capsys.readouterr()
    summary = (out / "summary.md").read_text()
    assert "| says-word " in summary and "| says-yes " in summary
    assert "broken.json" in captured.err and "1 earlier job files in the folder included" in captured.out


def test_bounded_input_fails_fast_and_named(tmp_path):
    deep = write(tmp_path, "x = " + "[" * 100_000 + "]" * 100_000, "deep.toml")
    with pytest.raises(ConfigError, match=r"deep\.toml: nested too deeply to parse"):
        load_config(deep)
    big = write(tmp_path, "[tasks.waterbirds-spurious]\nrhos = [" + "0.5, " * 300_000 + "]", "big.toml")
    with pytest.raises(ConfigError, match=r"big\.toml: \d+ bytes; a run config is at most 1048576 bytes"):
        load_config(big)


def test_out_and_cache_dir_must_be_folders(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match=r"run\.out: .*a-file exists and is not a folder"):
        load_config(write(tmp_path, f'[run]\nout = "{tmp_path / "a-file"}"'))
    with pytest.raises(ConfigError, match=r"^command line: --cache-dir: .*a-file exists and is not a folder"):
        default_config().with_overrides(cache_dir=str(tmp_path / "a-file"))
    assert load_config(write(tmp_path, f'[run]\nout = "{tmp_path / "a-file"}"'), lint=True)  # lint: no path checks
