"""The results schema as a file: a JSON Schema generated from the results dataclasses, and the
checks a result file must pass on read.

A submitter validates a run against a published file (`bench/core/results.schema.json`,
`fexbench schema`) rather than against our Python code, so the file is generated from the
dataclasses (pydantic) and a test keeps the shipped copy equal to the generated one. JSON Schema
states types, required fields and enumerations; what it cannot state across fields (a metric's
value and CI inside that metric's own `value_range`, `ci_low <= ci_high`) is checked here in
code, so every file read by fexbench passes both, and each problem is named by file and field.
"""
from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from fexbench.core.results import (READABLE_VERSIONS, SCHEMA_VERSION, STATUSES, JobResult, ResultsError,
                                   canonical_digest)

SCHEMA_FILE = Path(__file__).with_name("results.schema.json")
SCHEMA_ID = "https://fexbench.invalid/results.schema.json"
# Fields stored as JSON null when undefined (NaN): a metric's value and CI, and its per-seed and
# per-replicate series (JobResult.to_dict writes NaN as null).
_NULLABLE_NUMBERS = ("value", "ci_low", "ci_high")
_NULLABLE_SERIES = ("seed_values", "replicate_values")
_EPS = 1e-9  # float slack on range checks (a bootstrap quantile at a range end)
# One metric's unit values: per replicate its columns (S explainer seeds x n units, null = NaN) and,
# when the task gave them, one integer cluster id per unit (null: that replicate's units are
# independent). That every cluster list has one id per unit of its replicate is checked in code.
_NUMBERS = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "null"}]}}
_UNIT_VALUES_ENTRY = {
    "type": "object",
    "required": ["statistic", "replicates"],
    "additionalProperties": False,
    "properties": {
        "statistic": {"type": "string", "description": "the statistic's import path, module:function"},
        "replicates": {"type": "array", "description": "per replicate, its columns, each one row per explainer seed",
                       "items": {"type": "array", "items": {"type": "array", "items": _NUMBERS}}},
        "clusters": {"type": "array", "description": "per replicate, the cluster id (the subject model) of each "
                                                     "unit, or null for independent units",
                     "items": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}},
    },
}


class SchemaError(ResultsError):
    """A result file that does not satisfy the results schema."""


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


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) if SCHEMA_FILE.exists() else generate_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _range_problems(data: Mapping[str, Any]) -> list[str]:
    out = []
    metrics = data.get("metrics")
    if not isinstance(metrics, list):
        return out
    for i, m in enumerate(metrics):
        if not isinstance(m, Mapping):
            continue
        where = f"metrics[{i}]" + (f" ({m['name']})" if isinstance(m.get("name"), str) else "")
        rng = m.get("value_range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(_finite(v) for v in rng)):
            continue  # the type check names it
        low, high = rng
        if low > high:
            out.append(f"{where}.value_range: low {low} > high {high}")
            continue

        def outside(x):
            return _finite(x) and not (low - _EPS <= x <= high + _EPS)

        for name in ("value", "ci_low", "ci_high", "chance"):
            if outside(m.get(name)):
                out.append(f"{where}.{name}: {m[name]} is outside the metric's value_range [{low}, {high}]")
        for name in _NULLABLE_SERIES:
            for j, x in enumerate(m.get(name) or ()):
                if outside(x):
                    out.append(f"{where}.{name}[{j}]: {x} is outside the metric's value_range [{low}, {high}]")
        lo, hi = m.get("ci_low"), m.get("ci_high")
        if _finite(lo) and _finite(hi) and lo > hi + _EPS:
            out.append(f"{where}: ci_low {lo} > ci_high {hi}")
    return out


def _unit_value_problems(data: Mapping[str, Any]) -> list[str]:
    """Cluster ids that do not match their columns: one list per replicate, one id per unit."""
    out = []
    unit_values = data.get("unit_values")
    if not isinstance(unit_values, Mapping):
        return out
    for name, entry in unit_values.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("clusters"), list):
            continue
        clusters, replicates = entry["clusters"], entry.get("replicates")
        if not isinstance(replicates, list):
            continue  # the type check names it
        where = f"unit_values.{name}.clusters"
        if len(clusters) != len(replicates):
            out.append(f"{where}: {len(clusters)} entries for {len(replicates)} replicates")
            continue
        for r, (ids, columns) in enumerate(zip(clusters, replicates)):
            units = {len(row) for col in columns if isinstance(col, list) for row in col if isinstance(row, list)}
            if isinstance(ids, list) and len(units) == 1 and len(ids) != next(iter(units)):
                out.append(f"{where}[{r}]: {len(ids)} cluster ids for {next(iter(units))} units")
    return out


def problems(data: Any) -> list[str]:
    """Every way `data` (a parsed result file) breaks the schema, each as 'field.path: why';
    empty when it is valid. Types first; the range checks run on what is well typed."""
    if not isinstance(data, Mapping):
        return [f"(top level): expected a JSON object, found {type(data).__name__}"]
    out = []
    for err in sorted(_validator().iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        message = err.message if len(err.message) <= 160 else err.message[:157] + "..."
        out.append(f"{_path(err.absolute_path)}: {message}")
    return out + _range_problems(data) + _unit_value_problems(data)


def check(data: Any, source: str = "<dict>") -> None:
    """Raise SchemaError naming `source` and every bad field (the first few) when `data` is invalid."""
    found = problems(data)
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise SchemaError(f"{source}: " + "; ".join(found[:5]) + more)


def validate_file(path: str | Path) -> list[str]:
    """Every problem of one result file (JSON, digest, schema), each naming the file; [] if valid."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        return [f"{path}: cannot read: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text"]
    except (json.JSONDecodeError, RecursionError) as exc:
        return [f"{path}: not valid JSON: {str(exc)[:120]}"]
    found = [f"{path}: {p}" for p in problems(data)]
    if isinstance(data, Mapping) and data.get("digest") is not None and not found:
        try:
            if data["digest"] != canonical_digest(data):
                found.append(f"{path}: digest: content does not match its recorded digest (edited or corrupted)")
        except (TypeError, ValueError):
            found.append(f"{path}: digest: the content cannot be digested")
    if not found:
        try:
            JobResult.from_dict(data, source=str(path))
        except ResultsError as exc:
            found.append(str(exc))
    return found


# files a run writes beside its results (fexbench.harness.provenance, the runner's timing.json)
RUN_METADATA = frozenset({"run-config.json", "environment.json", "timing.json"})


def validate_dir(folder: str | Path) -> tuple[int, list[str]]:
    """(number of result files checked, their problems) for every <task>/<explainer>.json below
    `folder` (a run folder, or a folder of run folders)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*.json") if p.is_file() and p.name not in RUN_METADATA)
    found: list[str] = []
    for path in files:
        found += validate_file(path)
    return len(files), found


# --- the command line -----------------------------------------------------------------------------
