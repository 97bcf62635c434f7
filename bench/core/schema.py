"""The results schema as a file, and the checks a result file must pass on read: the JSON Schema
(generated from the results dataclasses by fexbench.core.results.generate_schema, shipped as
results.schema.json) plus the cross-field checks it cannot state.

A submitter validates a run against a published file (`bench/core/results.schema.json`,
`fexbench schema`) rather than against our Python code, so the file is generated from the
dataclasses (pydantic) and a test keeps the shipped copy equal to the generated one. JSON Schema
states types, required fields and enumerations; what it cannot state across fields (a metric's
value and CI inside that metric's own `value_range`, `ci_low <= ci_high`) is checked here in
code, so every file read by fexbench passes both, and each problem is named by file and field.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from fexbench.core.errors import ResultsError

SCHEMA_VERSION = 3  # 2: metrics carry `seed_values`, config `explainer_seeds`; 3: replicates, unit values
READABLE_VERSIONS = (1, 2, 3)  # version 1 is version 2 with one explainer seed; 2 is 3 with one replicate
STATUSES = ("ok", "error", "skipped")  # skipped: the explainer declares it cannot explain the task's targets

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


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))  # shipped; tests/test_schema.py keeps it current
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


