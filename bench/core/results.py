"""The typed results schema: one JSON file per (task, explainer) job, written atomically.

A result carries everything needed to trust or reproduce it: metric values with CIs and their
direction, per-subject raw numbers, the measured ground truth, configs, seed, package versions,
content hashes of data and weights, wall time and peak memory.
"""
from __future__ import annotations

import hashlib
import copy
import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from pydantic import TypeAdapter, ValidationError

from fexbench.core.cache import UnsafeFile, atomic_write_json, read_regular_file
from fexbench.core.errors import ResultsError
from fexbench.core.schema import (MAX_RESULT_BYTES, READABLE_VERSIONS, SCHEMA_FILE, SCHEMA_VERSION, STATUSES,  # noqa: F401
                                  _NULLABLE_NUMBERS, _NULLABLE_SERIES, _UNIT_VALUES_ENTRY, SCHEMA_ID, SchemaError, check,
                                  problems)
from fexbench.core.text import display_text
from fexbench.core.metrics import MetricValue

TRACKED_PACKAGES = ("fexbench", "torch", "numpy", "scipy", "scikit-learn", "safetensors", "transformers",
                    "open_clip_torch", "datasets", "lemminflect", "tabulate")




def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True)
class JobResult:
    task: str
    explainer: str
    oracle: bool
    status: str  # "ok" | "error" | "skipped"
    job_key: str
    seed: int
    metrics: tuple[MetricValue, ...] = ()
    error: str | None = None
    per_subject: Mapping[str, Any] = field(default_factory=dict)
    ground_truth: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    hashes: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=package_versions)
    wall_time_s: float = 0.0
    fit_time_s: float = 0.0
    explain_time_s: float = 0.0
    peak_rss_mb: float = 0.0
    # Replicates (schema 3): per replicate its run seed, explainer seeds, hashes, ground truth and
    # per-subject numbers (replicate 0 is also the top-level fields above); per metric, the per-unit
    # columns behind it (fexbench.harness.pooling), so paired statistics can be recomputed later.
    replicates: tuple[Mapping[str, Any], ...] = ()
    unit_values: Mapping[str, Any] = field(default_factory=dict)
    # The explanations themselves (replicate 0, first explainer seed): subject -> one entry per
    # target {"target", "concepts": [[word, weight], ...], "evidence": [...]}, so a published board
    # can be audited and re-scored, and its word clouds drawn, from the result file alone.
    explanations: Mapping[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION
    resumed: bool = field(default=False, compare=False)  # this run read it back instead of computing it; not stored
    # sha256 of the canonical JSON of every other field, written by write_result and checked by
    # read_result; None for a result not read from a file or written before digests existed
    digest: str | None = None

    @property
    def explainer_seeds(self) -> list[int]:
        """The context seeds the explainer was scored over (version-1 results: the run seed)."""
        return list(self.config.get("explainer_seeds", [self.seed]))

    def metric(self, name: str) -> MetricValue:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.task}/{self.explainer} has no metric {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN (an undefined metric) becomes null so any JSON reader accepts it."""
        data = asdict(self)
        data.pop("resumed")
        return _json_safe(data)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "JobResult":
        """A result from its JSON form, every field type-checked (pydantic); any problem is a
        ResultsError naming `source` and the field, never another exception."""
        if not isinstance(data, Mapping):
            raise ResultsError(f"{source}: expected a JSON object, found {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing = {"task", "explainer", "oracle", "status", "job_key", "seed"} - set(data)
        if missing:
            raise ResultsError(f"{source}: missing field(s) {sorted(missing)}")
        unknown = set(data) - names
        if unknown:
            raise ResultsError(f"{source}: unknown field(s) {sorted(unknown)}")
        if data.get("schema_version", SCHEMA_VERSION) not in READABLE_VERSIONS:
            raise ResultsError(f"{source}: schema_version {data['schema_version']!r} is not one of {READABLE_VERSIONS}")
        if data["status"] not in STATUSES:
            raise ResultsError(f"{source}: status must be one of {', '.join(STATUSES)}, not {data['status']!r}")
        check(data, source)
        metrics = data.get("metrics", ())
        if not isinstance(metrics, (list, tuple)) or not all(isinstance(m, Mapping) for m in metrics):
            raise ResultsError(f"{source}: metrics: expected a list of objects")
        # JSON null is an undefined metric (NaN); every other value is left to the type check
        undefined = ("value", "ci_low", "ci_high")
        series = ("seed_values", "replicate_values")
        prepared = {**data, "metrics": [
            {**m, **{k: float("nan") for k in undefined if k in m and m[k] is None},
             **{k: [float("nan") if v is None else v for v in m[k]] for k in series
                if isinstance(m.get(k), (list, tuple))}} for m in metrics]}
        try:
            return _adapter().validate_python(prepared)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "result"
            raise ResultsError(f"{source}: {where}: {first['msg']} (got {_short(first.get('input'))})") from None
        except (TypeError, ValueError, KeyError) as exc:  # a dataclass's own check
            raise ResultsError(f"{source}: malformed result: {type(exc).__name__}: {exc}") from None


_ADAPTER: TypeAdapter | None = None


def _adapter() -> TypeAdapter:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = TypeAdapter(JobResult)
    return _ADAPTER


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def canonical_digest(data: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a result's dict without its digest."""
    body = {k: v for k, v in data.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def result_path(out_dir: str | Path, task: str, explainer: str) -> Path:
    return Path(out_dir) / task / f"{explainer}.json"


def write_result(out_dir: str | Path, result: JobResult) -> Path:
    """Written atomically, with the digest of its content recorded inside it."""
    data = result.to_dict()
    data["digest"] = canonical_digest(data)
    return atomic_write_json(result_path(out_dir, result.task, result.explainer), data)


def _shown(path: Path) -> str:
    """A path as it is named in a message: a hostile file name cannot hide or rewrite the line."""
    return display_text(path)


def _load(path: Path) -> Any:
    """The parsed JSON of a result file, read only if it is a regular file of at most
    MAX_RESULT_BYTES (fexbench.core.cache.read_regular_file: a FIFO, a device or a symlink to one,
    and an oversized file are refused before anything is read); any failure is a one-line
    ResultsError naming the file."""
    try:
        raw = read_regular_file(path, MAX_RESULT_BYTES)
    except UnsafeFile as exc:
        raise ResultsError(f"{_shown(path)}: refused: {exc}") from None
    except OSError as exc:
        raise ResultsError(f"{_shown(path)}: cannot read result: {exc.strerror or exc}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ResultsError(f"{_shown(path)}: not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"{_shown(path)}: not valid JSON: {str(exc)[:120]}") from None


def read_result(path: str | Path) -> JobResult:
    """A result file, checked: a regular file of at most MAX_RESULT_BYTES, UTF-8 JSON, an object,
    its recorded digest matching its content (when it has one; one without is returned with digest
    None: unverified), every field of the right type and within its bounds, statistics registered.
    Any failure is a ResultsError naming the file."""
    path = Path(path)
    data = _load(path)
    if isinstance(data, Mapping) and "digest" in data:
        try:
            matches = data["digest"] == canonical_digest(data)
        except (TypeError, ValueError):
            matches = False
        if not matches:
            raise ResultsError(f"{_shown(path)}: content does not match its recorded digest (edited or corrupted)")
    return JobResult.from_dict(data, source=_shown(path))


def read_results_dir(out_dir: str | Path) -> tuple[list[JobResult], list[str]]:
    """Every readable job file under `out_dir` (<task>/<explainer>.json: every *.json in a task
    folder, whatever its name), and one message per file that was skipped (so a corrupt, oversized
    or non-regular file is named, never silently dropped, never a hang) or read unverified."""
    results, problems = [], []
    for path in sorted(Path(out_dir).glob("*/*.json")):
        try:
            result = read_result(path)
        except ResultsError as exc:
            problems.append(f"skipped {exc}")
            continue
        if result.digest is None:
            problems.append(f"{_shown(path)}: no recorded digest (written by an older fexbench); included unverified")
        results.append(result)
    return results, problems


def task_folder_hint(folder: str | Path) -> str | None:
    """When `folder` was given where a run folder (<task>/<explainer>.json) is expected but is one
    level too deep, a task folder of a run (it holds <explainer>.json files directly and no
    <task>/*.json), the message that says so and names the run folder to pass instead; else None."""
    folder = Path(folder)
    try:
        if not folder.is_dir() or any(folder.glob("*/*.json")):
            return None
        direct = sorted(p for p in folder.glob("*.json") if p.is_file())
    except OSError:
        return None
    names = []
    for path in direct[:50]:
        try:
            data = _load(path)
        except ResultsError:
            continue
        if isinstance(data, Mapping) and "task" in data and "explainer" in data:
            names.append(path.name)
    if not names:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    parent = folder.parent if folder.name not in ("", ".", "..") else folder.resolve().parent
    return (f"{_shown(folder)}: looks like a task folder of a run (it holds <explainer>.json files directly: "
            f"{display_text(shown)}), not a run folder (<task>/<explainer>.json); "
            f"pass the run folder, its parent: {_shown(parent)}")


def no_results_message(folder: str | Path, default: str) -> str:
    """What to say of a folder that gave no result: the task-folder hint when it is one, else `default`."""
    return task_folder_hint(folder) or default


# --- the schema file: generated from the dataclasses above, and whole files checked against it ---

def generate_schema() -> dict[str, Any]:
    """The JSON Schema of one result file, generated from JobResult and MetricValue.

    pydantic gives types and required fields; on top we state what the JSON form adds: NaN is
    null, `status` and `schema_version` are enumerations, unknown fields are refused and
    `resumed` is never stored."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(JobResult).json_schema(mode="validation")
    schema = copy.deepcopy(schema)
    props = schema["properties"]
    props.pop("resumed", None)
    props["status"] = {**props["status"], "enum": list(STATUSES)}
    props["schema_version"] = {**props["schema_version"], "enum": list(READABLE_VERSIONS)}
    for name in ("wall_time_s", "fit_time_s", "explain_time_s", "peak_rss_mb"):
        props[name] = {**props[name], "minimum": 0}
    props["digest"] = {"anyOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}],
                       "default": None, "title": "Digest",
                       "description": "sha256 of the canonical JSON of every other field"}
    schema["additionalProperties"] = False
    metric = schema["$defs"]["MetricValue"]
    metric["additionalProperties"] = False
    mprops = metric["properties"]
    for name in _NULLABLE_NUMBERS:
        mprops[name] = {"anyOf": [{"type": "number"}, {"type": "null"}], "title": mprops[name].get("title", name),
                        "description": "null: undefined (NaN)"}
    for name in _NULLABLE_SERIES:
        mprops[name] = {**mprops[name], "items": {"anyOf": [{"type": "number"}, {"type": "null"}]}}
    mprops["n"] = {**mprops["n"], "minimum": 0}
    props["unit_values"] = {**props["unit_values"], "additionalProperties": _UNIT_VALUES_ENTRY,
                            "description": "metric -> the per-unit columns behind it (fexbench.harness.pooling)"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "fexbench job result",
        "description": ("One (task, explainer) job of a fexbench run, stored as <out>/<task>/<explainer>.json. "
                        "Also checked in code (not expressible here): every metric's value, ci_low, ci_high, "
                        "seed_values, replicate_values and chance lie inside its value_range; ci_low <= ci_high; "
                        "value_range low <= high; unit_values' cluster ids, when present, are one list per "
                        "replicate with one id per unit; the digest, when present, matches the content."),
        "x-fexbench-schema-version": SCHEMA_VERSION,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def schema_text() -> str:
    """The schema as the file holds it: sorted keys, two-space indent, a final newline."""
    return json.dumps(generate_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schema(path: str | Path = SCHEMA_FILE) -> Path:
    """Regenerate the shipped schema file (after a change to the results dataclasses)."""
    from fexbench.core.cache import atomic_write_text

    return atomic_write_text(Path(path), schema_text())


def validate_file(path: str | Path) -> list[str]:
    """Every problem of one result file (file kind and size, JSON, digest, schema), each naming the
    file; [] if valid."""
    path = Path(path)
    try:
        data = _load(path)
    except ResultsError as exc:
        return [str(exc)]
    found = [f"{_shown(path)}: {p}" for p in problems(data)]
    if isinstance(data, Mapping) and data.get("digest") is not None and not found:
        try:
            if data["digest"] != canonical_digest(data):
                found.append(f"{_shown(path)}: digest: content does not match its recorded digest (edited or corrupted)")
        except (TypeError, ValueError):
            found.append(f"{_shown(path)}: digest: the content cannot be digested")
    if not found:
        try:
            JobResult.from_dict(data, source=_shown(path))
        except ResultsError as exc:
            found.append(str(exc))
    return found


# files a run writes beside its results (fexbench.harness.provenance, the runner's timing.json),
# at the top level of the run folder only: inside a task folder every *.json is a result
RUN_METADATA = frozenset({"run-config.json", "environment.json", "timing.json", "board.json"})
_RESULT_KEYS = frozenset({"task", "explainer", "oracle", "status", "job_key", "seed"})  # read_result requires all


def _is_metadata(path: Path, folder: Path, runs_inside: bool) -> bool:
    """Whether `path` is a run's metadata file rather than a result: its name is one of
    RUN_METADATA, it lies at a run folder's top level (`folder` itself, or a child of `folder`
    when `folder` holds run folders), and it is not result-shaped (a readable JSON object with
    every field read_result requires, which a reader of that folder would take as a result)."""
    depth = len(path.relative_to(folder).parts)
    if path.name not in RUN_METADATA or not (depth == 1 or (depth == 2 and runs_inside)):
        return False
    try:
        data = _load(path)
    except ResultsError:
        return False  # unreadable, oversized, not a regular file: validate names it
    return not (isinstance(data, Mapping) and _RESULT_KEYS <= set(data))


def result_files(folder: str | Path) -> list[Path]:
    """Every file `validate` checks as a result below `folder` (a run folder, or a folder of run
    folders): every *.json that is not a folder and not a run's metadata (_is_metadata). FIFOs,
    devices and symlinks named *.json are included, so they are named, not silently passed over."""
    folder = Path(folder)
    top = {p.name for p in folder.glob("*.json")}
    runs_inside = not (top & RUN_METADATA)  # a run folder has its metadata at its top level
    out = []
    for path in sorted(folder.rglob("*.json")):
        if not path.is_symlink() and path.is_dir():
            continue
        if _is_metadata(path, folder, runs_inside):
            continue
        out.append(path)
    return out


def validate_dir(folder: str | Path) -> tuple[int, list[str]]:
    """(number of result files checked, their problems) for every result file below `folder` (a
    run folder, or a folder of run folders; result_files)."""
    files = result_files(folder)
    found: list[str] = []
    for path in files:
        found += validate_file(path)
    return len(files), found
