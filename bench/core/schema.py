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
from typing import Any, Callable, Iterable, Mapping

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
        "statistic": {"type": "string", "description": "a registered statistic, named module:function "
                                                         "(fexbench.core.schema.register_statistic); never imported"},
        "replicates": {"type": "array", "description": "per replicate, its columns, each one row per explainer seed",
                       "items": {"type": "array", "items": {"type": "array", "items": _NUMBERS}}},
        "clusters": {"type": "array", "description": "per replicate, the cluster id (the subject model) of each "
                                                     "unit, or null for independent units",
                     "items": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}},
    },
}


class SchemaError(ResultsError):
    """A result file that does not satisfy the results schema."""


# --- bounds on what a result file may hold: far above any real run, far below harm -------------
MAX_RESULT_BYTES = 64 * 2 ** 20  # one result file (the largest published one is under 4 MiB)
MAX_NAME_CHARS = 200  # a task, explainer or metric name
MAX_CONCEPTS = 1_000  # concepts ([word, weight]) in one explanation (one target)
MAX_WORD_CHARS = 200  # one concept word
MAX_EVIDENCE = 1_000  # evidence lines in one explanation
MAX_EVIDENCE_CHARS = 2_000  # one evidence line


# --- the statistics a result file may name: a registry of code, never an import path from data ---
_STATISTICS: dict[str, Callable[..., Any]] = {}
_RECORDED: dict[int, str] = {}  # id(function) -> the name written for it (its first registered name)


def _builtin_statistics() -> None:
    if _STATISTICS:
        return
    from fexbench.core import metrics, stats

    # the tasks' statistics (Estimate.statistic), named as the tasks import them and as every
    # published file names them; nanmean also under the module that now defines it
    for module, name, function in (("fexbench.core.metrics", "nanmean", stats.nanmean),
                                   ("fexbench.core.stats", "nanmean", stats.nanmean),
                                   ("fexbench.core.metrics", "spearman", metrics.spearman),
                                   ("fexbench.core.metrics", "auroc", metrics.auroc)):
        _STATISTICS[f"{module}:{name}"] = function
        _RECORDED.setdefault(id(function), f"{module}:{name}")


def register_statistic(function: Callable[..., Any], *aliases: str) -> str:
    """Let result files name `function` (a module-level function) by its path 'module:qualname',
    and by `aliases`; returns the path. A task with a statistic of its own registers it when its
    module is imported, so reading a result file never imports anything the file names."""
    _builtin_statistics()
    name = f"{getattr(function, '__module__', '')}:{getattr(function, '__qualname__', '')}"
    if not callable(function) or "<" in name or name.startswith(":") or name.endswith(":"):
        raise ValueError(f"statistic {function!r} is not a module-level function")
    for key in (name, *aliases):
        old = _STATISTICS.get(key)
        if old is not None and old is not function:
            raise ValueError(f"statistic {key!r} is already registered for another function")
        _STATISTICS[key] = function
    _RECORDED.setdefault(id(function), name)
    return name


def registered_statistics() -> dict[str, Callable[..., Any]]:
    """Every name a result file may give as `unit_values.<metric>.statistic`, with its function."""
    _builtin_statistics()
    return dict(_STATISTICS)


def statistic_name(function: Callable[..., Any]) -> str:
    """The name a result file records for `function` ('module:function', the first name it was
    registered under), which must be registered (register_statistic), else ValueError saying so."""
    _builtin_statistics()
    name = _RECORDED.get(id(function))
    if name is None or _STATISTICS.get(name) is not function:
        path = f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', function)}"
        raise ValueError(f"statistic {path!r} is not registered; register it with "
                         "fexbench.core.schema.register_statistic so result files can name it")
    return name


def resolve_statistic(name: Any) -> Callable[..., Any]:
    """The registered function a result file's statistic name stands for; ValueError for any
    other name (nothing is imported)."""
    _builtin_statistics()
    function = _STATISTICS.get(name) if isinstance(name, str) else None
    if function is None:
        raise ValueError(f"{_short(name)} is not a registered statistic (registered: {', '.join(sorted(_STATISTICS))})")
    return function


def _key(name: Any) -> str:
    """A key from a file as a field name in a message: shown as it is (display_text), at most 40 characters."""
    from fexbench.core.text import display_text

    text = display_text(name)
    return text if len(text) <= 40 else text[:37] + "..."


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


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
    """Statistics that are not registered; cluster ids that do not match their columns: one list
    per replicate, one id per unit."""
    out = []
    unit_values = data.get("unit_values")
    if not isinstance(unit_values, Mapping):
        return out
    for name, entry in unit_values.items():
        if isinstance(entry, Mapping) and isinstance(entry.get("statistic"), str):
            try:
                resolve_statistic(entry["statistic"])
            except ValueError as exc:
                out.append(f"unit_values.{_key(name)}.statistic: {exc}")
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


def _bound_problems(data: Mapping[str, Any]) -> list[str]:
    """Names, explanations and their words and evidence over the bounds above, and explanations
    not of the shape fexbench writes (subject -> list of {concepts: [[word, weight]], evidence:
    [line]}); the first few of each kind, so a hostile file cannot make the report itself huge."""
    out: list[str] = []
    for key in ("task", "explainer"):
        if isinstance(data.get(key), str) and len(data[key]) > MAX_NAME_CHARS:
            out.append(f"{key}: {len(data[key])} characters, over the limit of {MAX_NAME_CHARS}")
    metrics = data.get("metrics")
    for i, m in enumerate(metrics if isinstance(metrics, list) else ()):
        if isinstance(m, Mapping) and isinstance(m.get("name"), str) and len(m["name"]) > MAX_NAME_CHARS:
            out.append(f"metrics[{i}].name: {len(m['name'])} characters, over the limit of {MAX_NAME_CHARS}")
    explanations = data.get("explanations")
    if not isinstance(explanations, Mapping):
        return out  # the type check names it
    for subject, entries in explanations.items():
        if len(out) >= 10:
            break
        where = f"explanations.{_key(subject)}"
        if not isinstance(entries, list):
            out.append(f"{where}: expected a list of explanations, found {type(entries).__name__}")
            continue
        for t, entry in enumerate(entries):
            if len(out) >= 10:
                break
            here = f"{where}[{t}]"
            if not isinstance(entry, Mapping):
                out.append(f"{here}: expected an object, found {type(entry).__name__}")
                continue
            concepts, evidence = entry.get("concepts", []), entry.get("evidence", [])
            if not isinstance(concepts, list):
                out.append(f"{here}.concepts: expected a list of [word, weight], found {type(concepts).__name__}")
            elif len(concepts) > MAX_CONCEPTS:
                out.append(f"{here}.concepts: {len(concepts)} concepts, over the limit of {MAX_CONCEPTS}")
            else:
                for c, pair in enumerate(concepts):
                    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                            and (pair[1] is None or _finite(pair[1]))):
                        out.append(f"{here}.concepts[{c}]: expected [word, weight], found {_short(pair, 60)}")
                        break
                    if len(pair[0]) > MAX_WORD_CHARS:
                        out.append(f"{here}.concepts[{c}]: a word of {len(pair[0])} characters, "
                                   f"over the limit of {MAX_WORD_CHARS}")
                        break
            if not isinstance(evidence, list):
                out.append(f"{here}.evidence: expected a list of lines, found {type(evidence).__name__}")
            elif len(evidence) > MAX_EVIDENCE:
                out.append(f"{here}.evidence: {len(evidence)} lines, over the limit of {MAX_EVIDENCE}")
            else:
                for e, line in enumerate(evidence):
                    if not isinstance(line, str):
                        out.append(f"{here}.evidence[{e}]: expected a string, found {type(line).__name__}")
                        break
                    if len(line) > MAX_EVIDENCE_CHARS:
                        out.append(f"{here}.evidence[{e}]: {len(line)} characters, over the limit of "
                                   f"{MAX_EVIDENCE_CHARS}")
                        break
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
    return out + _range_problems(data) + _unit_value_problems(data) + _bound_problems(data)


def check(data: Any, source: str = "<dict>") -> None:
    """Raise SchemaError naming `source` and every bad field (the first few) when `data` is invalid."""
    found = problems(data)
    if found:
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        raise SchemaError(f"{source}: " + "; ".join(found[:5]) + more)


