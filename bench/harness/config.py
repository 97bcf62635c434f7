"""The run config: one TOML file naming everything a run uses, checked in full before any work.

```toml
[run]                    # where and how (every key optional; see RunSection)
out = "fexbench-results"
device = "cuda"
tasks = ["waterbirds-spurious"]   # omitted or "all": every registered task
explainers = "all"

[tasks.waterbirds-spurious]        # that task's constructor arguments
rhos = [0.5, 0.95]

[explainers.random]                # that explainer's constructor arguments

[resources.clip]                   # that resource provider's options
model = "ViT-B-32"
```

Task, explainer and resource options are checked against the constructor's (or provider's)
signature and type hints, so an unknown key or a wrong type is caught here, naming the file and the
dotted key (`run.toml: tasks.waterbirds-spurious.rhos[1]: expected a number, got 'x'`). Nested
values are checked generically: a dict with a "family" key is a pretrained-model spec
(fexbench.models.pretrained), keys named root/file/checkpoint/*_root/*_file must be existing paths, and
path/model/pretrained/*_path values that look local must exist (see `looks_local`; so a checkpoint
file in `[resources.clip] pretrained = "..."` is checked, a tag such as "laion2b_s34b_b79k" is
not). Relative paths are taken from the working directory, as the command-line flags are.
`fexbench run` with no config runs `default_config()`; `datasets/configs/default.toml` spells the
same run out.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fexbench.core import registry


from fexbench.core.references import ConfigError, check_device, is_device, local_path, looks_local  # noqa: F401


# -- the config tree ---------------------------------------------------------------------------------
SEED_MAX = 2**32 - 1  # seeds are numpy/torch seeds: unsigned 32-bit
# Limits no real run reaches, so a typo or a hostile file fails here, named, and not after hours
# or gigabytes: the config file's size, list and table lengths, nesting depth, string length.
MAX_CONFIG_BYTES = 1 << 20
MAX_ENTRIES = 10_000
MAX_DEPTH = 16
MAX_STRING = 10_000


class RunSection(BaseModel):
    """[run]: where results and caches go and how to compute. Every key is optional."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    out: str = "fexbench-results"
    cache_dir: str = ".fexbench-cache"
    seed: int = Field(0, ge=0, le=SEED_MAX)
    explainer_seeds: int = Field(0, ge=0, le=1000)  # seeds per stochastic explainer; 0: each explainer's own
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto
    amp: bool = True  # mixed precision (autocast) on cuda only; never on cpu
    batch_size: int = Field(64, ge=1, le=65536)  # forward passes of every subject kind
    workers: int = Field(0, ge=0, le=1024)  # image-decoding threads; 0 = min(8, CPU count)
    threads: int = Field(0, ge=0, le=1024)  # torch/BLAS threads; 0: OMP_NUM_THREADS, else usable CPUs (fexbench.core.threads)
    max_bad_image_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # share of unreadable images tolerated per split
    tasks: tuple[str, ...] | None = None  # None: every registered task
    explainers: tuple[str, ...] | None = None  # None: the built-in explainers (a plugin runs when named, or "all")
    resume: bool = True
    progress: bool = True
    # how the job graph runs (fexbench.harness.executors): worker processes, in this process, or on Ray
    executor: Literal["process", "local", "ray"] = "process"
    # independent replicates of every task (own world data, zoo, explainer seeds); see docs/statistics.md
    replicates: int = Field(3, ge=1, le=100)  # 3: the fewest that give a t interval over replicates (docs/statistics.md)
    # per-task replicates where a design gives a task its own number (e.g. the full preset's, chosen by
    # `fexbench power --budget`); a task not named runs `replicates`
    task_replicates: dict[str, Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=dict)
    job_time_limit_s: float | None = Field(None, gt=0)  # per (task, explainer) job; None: no limit
    job_memory_limit_mb: float | None = Field(None, gt=0)  # per job, above what the process maps at its start
    preset: str | None = None  # a shipped preset this config starts from (fexbench.presets); its keys win
    # a release (folder, .tar/.zip archive or http(s) URL; docs/release.md): its subjects and resources are
    # placed in the cache, its design (seed, replicates, task options) is run, and nothing is trained
    release: str | None = None
    train: bool = True  # false: a subject missing from the cache is an error naming it, never trained


_RANGES = {"seed": f"an integer in [0, {SEED_MAX}]", "explainer_seeds": "0 (automatic) to 1000",
           "batch_size": "1 to 65536", "workers": "0 (automatic) to 1024", "threads": "0 (automatic) to 1024",
           "max_bad_image_fraction": "in [0, 1)", "replicates": "1 to 100",
           "job_time_limit_s": "a positive number of seconds", "job_memory_limit_mb": "a positive number of MB"}


class _DataSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


ImageSize = Field(224, ge=8, le=4096)
Limit = Field(None, ge=1)


class WorldData(_DataSpec):
    """The synthetic world: no options (sizes are the task's own arguments)."""
    source: Literal["world"] = "world"


class WildsData(_DataSpec):
    """Waterbirds in the WILDS layout (fexbench.data.waterbirds_wilds.load_waterbirds)."""
    source: Literal["wilds"]
    root: str
    image_size: int = ImageSize
    limit: int | None = Limit
    max_bad_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    workers: int | None = Field(None, ge=0, le=1024)


class HfData(_DataSpec):
    """Waterbirds as a Hugging Face dataset (fexbench.data.waterbirds_hf.load_waterbirds_hf)."""
    source: Literal["hf"]
    path_or_name: str
    image_column: str = "image"
    label_column: str = "y"
    place_column: str = "place"
    image_size: int = ImageSize
    limit: int | None = Limit
    id_column: str | None = None
    max_bad_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    cache_dir: str | None = None
    workers: int | None = Field(None, ge=0, le=1024)
    progress: bool = True


class ChallengeData(_DataSpec):
    """The ImageNet-9 backgrounds challenge release (fexbench.data.imagenet9_challenge)."""
    source: Literal["challenge"]
    root: str
    mapping_file: str | None = None
    image_size: int = ImageSize
    limit: int | None = Limit
    probe_variant: str = "mixed_rand"
    probe_limit: int | None = Field(1000, ge=1)


# the `data` option of the tasks that read real data: source -> its schema, checked before any work
DATA_SOURCES: dict[str, dict[str, type[_DataSpec]]] = {
    "waterbirds-spurious": {"world": WorldData, "wilds": WildsData, "hf": HfData},
    "imagenet9-background": {"world": WorldData, "challenge": ChallengeData},
}


def _check_data(task: str, options: Mapping[str, Any], dotted: str, where: "_Where") -> None:
    sources = DATA_SOURCES.get(task)
    data = options.get("data")
    if sources is None or data is None:
        return
    key = f"{dotted}.data"
    source = data.get("source", "world")
    if source not in sources:
        raise where.error(f"{key}.source", f"expected one of {', '.join(map(repr, sources))}, got {_show(source)}")
    schema = sources[source]
    try:
        schema.model_validate(thaw(data))
    except ValidationError as err:
        raise pydantic_error(err, key, data, where, schema.model_fields) from None


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (tuples stay tuples), for constructors and stable hashes."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(thaw(v) for v in value)
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class RunConfig:
    """A validated run: the [run] section plus per-task, per-explainer and per-resource options."""

    run: RunSection = field(default_factory=RunSection)
    tasks: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: types.MappingProxyType({}))
    explainers: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: types.MappingProxyType({}))
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: types.MappingProxyType({}))
    source: str = "<default>"

    def task_names(self) -> list[str]:
        return list(self.run.tasks) if self.run.tasks is not None else registry.tasks.names()

    def explainer_names(self) -> list[str]:
        """The named explainers; by default the built-in ones only (a third-party plugin runs when
        named or with `explainers = "all"`, never silently in the published default)."""
        if self.run.explainers is not None:
            return list(self.run.explainers)
        return sorted(registry.explainers.builtin_names())

    def task_configs(self) -> dict[str, dict[str, Any]]:
        return {name: thaw(kwargs) for name, kwargs in self.tasks.items()}

    def explainer_configs(self) -> dict[str, dict[str, Any]]:
        return {name: thaw(kwargs) for name, kwargs in self.explainers.items()}

    def resource_configs(self) -> dict[str, dict[str, Any]]:
        return {name: thaw(kwargs) for name, kwargs in self.resources.items()}

    def with_overrides(self, **values: Any) -> "RunConfig":
        """Command-line flags win over the file; a None value means "not given". Checked like the file."""
        given = {k: v for k, v in values.items() if v is not None}
        where = _Where("command line", {f"run.{k}": f"--{k.replace('_', '-')}" for k in given})
        run = _check_run(given, where, base=self.run)
        return dataclasses.replace(self, run=run)

    def environment(self, environment_cls: Callable[..., Any] | None = None) -> Any:
        """A fexbench.harness.runner.Environment for this run."""
        if environment_cls is None:
            from fexbench.harness.runner import Environment as environment_cls
        values = {"cache_dir": Path(self.run.cache_dir), "out_dir": Path(self.run.out), "seed": self.run.seed,
                  "explainer_seeds": self.run.explainer_seeds, "device": check_device(self.run.device),
                  "progress": self.run.progress, "amp": self.run.amp,
                  "batch_size": self.run.batch_size, "workers": self.run.workers, "threads": self.run.threads,
                  "max_bad_image_fraction": self.run.max_bad_image_fraction,
                  "replicates": self.run.replicates,
                  "task_replicates": dict(self.run.task_replicates),  # a plain dict: the environment is pickled to workers
                  "job_time_limit_s": self.run.job_time_limit_s,
                  "job_memory_limit_mb": self.run.job_memory_limit_mb,
                  "resource_configs": types.MappingProxyType(self.resource_configs())}
        return environment_cls(**values)


def default_config() -> RunConfig:
    """The run `fexbench run` does without a config: every registered task, the built-in explainers,
    RunSection's defaults (datasets/configs/default.toml spells it out; docs/configuration.md#defaults)."""
    return RunConfig()


def load_config(path: str | os.PathLike, lint: bool = False,
                overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read and validate a TOML run config; any problem is a ConfigError naming file and key.

    `overrides` are [run] values given on the command line (None = not given): they replace the
    file's before it is checked, so `--device cpu` rescues a file that asks for cuda. lint=True
    checks names, keys and types only: not that paths exist nor that the device is present (to
    check a recipe on a machine without its data or GPU).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if given:
        default_config().with_overrides(**given)  # the flags themselves, named as flags
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found" if not path.exists() else f"config {path} is not a file")
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ConfigError(f"{path}: YAML configs are not supported; write the same keys as TOML (a .toml file)")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes; a run config is at most {MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to parse; at most {MAX_DEPTH} levels") from None
    if given:
        run = data.get("run", {})
        data = {**data, "run": {**(run if isinstance(run, Mapping) else {}), **given}}
    data = with_preset(data, path)
    return validate(data, str(path), lint)


def with_preset(data: Mapping[str, Any], source: Any) -> dict[str, Any]:
    """A config that names `[run] preset`: the preset's tables with the config's keys on top
    (table by table, so `[tasks.X] n_probe = 100` changes one option of the preset's task X)."""
    run = data.get("run", {})
    name = run.get("preset") if isinstance(run, Mapping) else None
    if name is None:
        return dict(data)
    from fexbench import presets
    if not isinstance(name, str) or name not in presets.names():
        raise ConfigError(f"{source}: run.preset: unknown preset {name!r}; presets: {', '.join(presets.names())}")
    base = tomllib.loads(presets.path(name).read_text(encoding="utf-8"))

    def merge(a: Any, b: Any, depth: int) -> Any:
        if isinstance(a, Mapping) and isinstance(b, Mapping) and depth < 3:
            return {**a, **{k: merge(a.get(k), v, depth + 1) for k, v in b.items()}}
        return b
    return merge(base, dict(data), 0)


def validate(data: Mapping[str, Any], source: str = "<config>", lint: bool = False) -> RunConfig:
    """Validate an already parsed config (the TOML's tables as dicts)."""
    where = _Where(source, lint=lint)
    _check_bounds(data, "", where)
    unknown = sorted(set(data) - {"run", "tasks", "explainers", "resources"})
    if unknown:
        raise where.error(unknown[0], "unknown section; sections are run, tasks, explainers, resources")
    for section in ("run", "tasks", "explainers", "resources"):
        if section in data and not isinstance(data[section], Mapping):
            raise where.error(section, f"expected a table ([{section}]), got {_show(data[section])}")
    run = _check_run(dict(data.get("run", {})), where, base=RunSection())
    tasks = _check_components(data.get("tasks", {}), "tasks", registry.tasks, where)
    explainers = _check_components(data.get("explainers", {}), "explainers", registry.explainers, where)
    from fexbench.core.registry import resources as resource_registry
    res = _check_components(data.get("resources", {}), "resources", resource_registry, where, skip_first=1)
    return RunConfig(run, _frozen(tasks), _frozen(explainers), _frozen(res), source)


# -- validation ----------------------------------------------------------------------------------------
class _Where:
    """Formats errors as '<file>: <dotted key>: <reason>'."""

    def __init__(self, source: str, names: Mapping[str, str] | None = None, lint: bool = False):
        self.source, self.names, self.lint = source, dict(names or {}), lint

    def error(self, key: str, reason: str) -> ConfigError:
        for name, shown in self.names.items():  # run.tasks[1] -> --tasks[1] for command-line values
            if key == name or key.startswith(name + "["):
                key = shown + key[len(name):]
                break
        return ConfigError(f"{self.source}: {key}: {reason}")


def _show(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _check_bounds(value: Any, key: str, where: _Where, depth: int = 0) -> None:
    """Sizes, depth and seeds of a parsed config, before anything else reads it."""
    if depth > MAX_DEPTH:
        raise where.error(key, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (Mapping, list, tuple)) and len(value) > MAX_ENTRIES:
        raise where.error(key or "config", f"{len(value)} entries; at most {MAX_ENTRIES}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_bounds(v, f"{key}.{k}" if key else str(k), where, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(v, f"{key}[{i}]", where, depth + 1)
    elif isinstance(value, str) and len(value) > MAX_STRING:
        raise where.error(key, f"a string of {len(value)} characters; at most {MAX_STRING}")
    elif isinstance(value, int) and not isinstance(value, bool):
        name = key.rsplit(".", 1)[-1].split("[", 1)[0]
        if (name in ("seed", "seeds") or name.endswith("_seed")) and not 0 <= value <= SEED_MAX:
            raise where.error(key, f"must be an integer in [0, {SEED_MAX}] (a seed), got {value}")
        if abs(value) >= 2**63:
            raise where.error(key, f"integer {value} is out of range (64-bit)")


_TYPE_TEXT = {"int": "an integer", "bool": "true or false", "float": "a number", "string": "a string",
              "tuple": "a list", "list": "a list", "literal": "one of", "dict": "a table", "model": "a table"}


def pydantic_error(err: ValidationError, prefix: str, values: Mapping[str, Any], where: _Where,
                   known: Any = (), ranges: Mapping[str, str] | None = None) -> ConfigError:
    """The first error of a pydantic validation as '<file>: <prefix>.<dotted key>: <reason>'."""
    first = err.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    key = f"{prefix}.{loc}" if loc else prefix
    kind, value = first["type"], first.get("input")
    field = str(first["loc"][0]) if first["loc"] else ""
    if kind == "extra_forbidden":
        return where.error(key, f"unknown key; keys are {', '.join(sorted(known))}")
    if kind == "missing":
        return where.error(key, "required key is missing")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and ranges and field in ranges:
        return where.error(key, f"must be {ranges[field]}, got {value!r}")
    if kind == "literal_error":
        return where.error(key, f"{first['msg'].lower()}, got {_show(value)}")
    base = kind.split("_", 1)[0]
    if base in _TYPE_TEXT and kind.endswith(("_type", "_parsing", "_from_float")):
        return where.error(key, f"expected {_TYPE_TEXT[base]}, got {_show(value)}")
    return where.error(key, f"{first['msg']}, got {_show(value)}")


def _check_run(values: Mapping[str, Any], where: _Where, base: RunSection) -> RunSection:
    checked = dict(values)
    for key in ("tasks", "explainers"):
        if key in checked:
            checked[key] = _check_names(checked[key], f"run.{key}",
                                        registry.tasks if key == "tasks" else registry.explainers, where)
    if isinstance(checked.get("task_replicates"), Mapping):
        known = registry.tasks.names()
        for name in checked["task_replicates"]:
            if name not in known:
                raise where.error(f"run.task_replicates.{name}", f"unknown task {name!r}; known: {', '.join(known)}")
    try:
        run = RunSection.model_validate({**base.model_dump(), **checked})
    except ValidationError as err:
        raise pydantic_error(err, "run", checked, where, RunSection.model_fields, _RANGES) from None
    if "device" in checked:
        try:
            check_device("cpu" if where.lint and is_device(run.device) else run.device)
        except ConfigError as err:
            raise where.error("run.device", str(err)) from None
    for key in ("out", "cache_dir"):
        if key not in checked:
            continue
        value = getattr(run, key)
        if not value.strip():
            raise where.error(f"run.{key}", "must not be empty")
        if not where.lint and Path(value).exists() and not Path(value).is_dir():
            raise where.error(f"run.{key}", f"{Path(value).absolute()} exists and is not a folder")
    return run


def _check_names(value: Any, dotted: str, reg: registry.Registry, where: _Where) -> tuple[str, ...] | None:
    if value == "all":  # every registered explainer, plugins included (the default is the built-ins)
        return tuple(reg.names()) if reg is registry.explainers else None
    if value == "builtin" and reg is registry.explainers:  # the default: fexbench's own explainers
        return None
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",") if n.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise where.error(dotted, f"expected a non-empty list of names or \"all\", got {_show(value)}")
    known = reg.names()
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise where.error(f"{dotted}[{i}]", f"expected a name, got {_show(name)}")
        if name not in known:
            raise where.error(f"{dotted}[{i}]", f"unknown {reg.what} {name!r}; known: {', '.join(known) or 'none'}")
    return tuple(value)


def _check_components(section: Mapping[str, Any], kind: str, reg: registry.Registry, where: _Where,
                      skip_first: int = 0) -> dict[str, dict[str, Any]]:
    """[tasks.X] / [explainers.X] / [resources.X]: X registered, its options match its signature."""
    out: dict[str, dict[str, Any]] = {}
    known = reg.names()
    for name, options in section.items():
        dotted = f"{kind}.{name}"
        if name not in known:
            raise where.error(dotted, f"unknown {reg.what} {name!r}; known: {', '.join(known) or 'none registered'}")
        if not isinstance(options, Mapping):
            raise where.error(dotted, f"expected a table of options, got {_show(options)}")
        try:
            factory = reg.get(name)
        except registry.RegistryError as err:
            raise where.error(dotted, str(err)) from None
        out[name] = _check_kwargs(factory, options, dotted, where, skip_first)
        if kind == "tasks":
            _check_data(name, out[name], dotted, where)
        if inspect.isclass(factory) and not skip_first:
            # tasks and explainers only store their arguments (scikit-learn style), so building one
            # is free and surfaces the constructor's own checks now, before any work
            try:
                factory(**thaw(out[name]))
            except (ValueError, TypeError, KeyError) as err:
                raise where.error(dotted, f"{type(err).__name__}: {err}") from None
    return out


def _signature(factory: Callable) -> tuple[list[inspect.Parameter], bool, dict[str, Any]]:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return [], True, {}
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: check names, not types
        hints = {}
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    open_ended = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return params, open_ended, hints


def _check_kwargs(factory: Callable, options: Mapping[str, Any], dotted: str, where: _Where,
                  skip_first: int = 0) -> dict[str, Any]:
    params, open_ended, hints = _signature(factory)
    params = params[skip_first:]
    by_name = {p.name: p for p in params}
    out = {}
    for key, value in options.items():
        key_path = f"{dotted}.{key}"
        if key not in by_name and not open_ended:
            options_text = ", ".join(by_name) or "none"
            raise where.error(key_path, f"unknown option; options are: {options_text}")
        param = by_name.get(key)
        hint = hints.get(key, inspect.Parameter.empty)
        if hint is inspect.Parameter.empty and param is not None and param.default not in (inspect.Parameter.empty, None):
            hint = type(param.default)
        value = _check_type(value, hint, key_path, where)
        _check_nested(value, key_path, where, key)
        out[key] = value
    missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in options]
    if missing:
        raise where.error(f"{dotted}.{missing[0]}", "required option is missing")
    return out


def _check_type(value: Any, hint: Any, key: str, where: _Where) -> Any:
    """value checked against a type hint (TOML's types: bool, int, float, str, list, table);
    ints become floats where a float is expected and lists become tuples where a tuple is."""
    if hint is inspect.Parameter.empty or hint is Any or hint is object:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        errors = []
        for arm in arms:
            try:
                return _check_type(value, arm, key, where)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(arms) == 1 else where.error(key, f"{_show(value)} matches none of {_hint_text(hint)}")
    if origin is typing.Literal:
        if value not in args:
            raise where.error(key, f"expected one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise where.error(key, f"expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise where.error(key, f"expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise where.error(key, f"expected a number, got {_show(value)}")
        return float(value)
    if hint in (str, Path, os.PathLike):
        if not isinstance(value, str):
            raise where.error(key, f"expected a string, got {_show(value)}")
        return value
    container = origin or hint
    if container in (tuple, list, collections.abc.Sequence, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise where.error(key, f"expected a list, got {_show(value)}")
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise where.error(key, f"expected a list of {len(args)} items, got {len(value)}")
            items = [_check_type(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else inspect.Parameter.empty
            items = [_check_type(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if container is tuple else items
    if container in (dict, collections.abc.Mapping, typing.Mapping) or (
            inspect.isclass(container) and issubclass(container, collections.abc.Mapping)):
        if not isinstance(value, Mapping):
            raise where.error(key, f"expected a table, got {_show(value)}")
        value_hint = args[1] if len(args) == 2 else inspect.Parameter.empty
        return {k: _check_type(v, value_hint, f"{key}.{k}", where) for k, v in value.items()}
    if inspect.isclass(hint) and not isinstance(value, hint):
        raise where.error(key, f"expected {hint.__name__}, got {_show(value)}")
    return value


def _hint_text(hint: Any) -> str:
    return str(hint).replace("typing.", "")


ALWAYS_LOCAL = ("root", "file", "checkpoint")  # and *_root, *_file
MAYBE_LOCAL = ("path", "model", "pretrained")  # and *_path: a hub name / tag or a local path


def _check_nested(value: Any, key: str, where: _Where, name: str) -> None:
    """Generic checks inside option values: model specs, subject specs and local paths."""
    if isinstance(value, Mapping):
        if "family" in value:
            _check_spec(value, key, where)
            return
        if "backbone" in value:
            from fexbench.models.finetune import SubjectSpecError, validate_subject
            try:
                validate_subject(value)
            except SubjectSpecError as err:
                raise where.error(f"{key}.{err.key}" if err.key else key, err.reason) from None
        for k, v in value.items():
            _check_nested(v, f"{key}.{k}", where, str(k))
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_nested(v, f"{key}[{i}]", where, name)
        return
    if not isinstance(value, str) or where.lint:
        return
    always = name in ALWAYS_LOCAL or name.endswith(("_root", "_file"))
    maybe = name in MAYBE_LOCAL or name.endswith("_path")
    if (always or (maybe and looks_local(value))) and not local_path(value).exists():
        raise where.error(key, f"path does not exist: {local_path(value).absolute()}")


def _check_spec(spec: Mapping[str, Any], key: str, where: _Where) -> None:
    from fexbench.models.pretrained import SpecError, validate_spec
    try:
        validate_spec(spec, check_paths=not where.lint)
    except SpecError as err:
        raise where.error(f"{key}.{err.key}" if err.key else key, err.reason) from None
