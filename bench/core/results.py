"""The typed results schema: one JSON file per (task, explainer) job, written atomically.

A result carries everything needed to trust or reproduce it: metric values with CIs and their
direction, per-subject raw numbers, the measured ground truth, configs, seed, package versions,
content hashes of data and weights, wall time and peak memory.
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from fexbench.core.cache import atomic_write_json
from fexbench.core.metrics import MetricValue

SCHEMA_VERSION = 2  # 2: metrics carry `seed_values`, config carries `explainer_seeds`
READABLE_VERSIONS = (1, 2)  # version 1 is version 2 with one explainer seed
TRACKED_PACKAGES = ("fexbench", "torch", "numpy", "scipy", "scikit-learn", "safetensors", "transformers",
                    "open_clip_torch", "datasets", "simplemma", "tabulate")


class ResultsError(ValueError):
    pass


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
    status: str  # "ok" | "error"
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
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

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
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "JobResult":
        names = {f.name for f in fields(cls)}
        missing = {"task", "explainer", "oracle", "status", "job_key", "seed"} - set(data)
        if missing:
            raise ResultsError(f"{source}: missing field(s) {sorted(missing)}")
        unknown = set(data) - names
        if unknown:
            raise ResultsError(f"{source}: unknown field(s) {sorted(unknown)}")
        if data.get("schema_version", SCHEMA_VERSION) not in READABLE_VERSIONS:
            raise ResultsError(f"{source}: schema_version {data['schema_version']} is not one of {READABLE_VERSIONS}")
        if data["status"] not in ("ok", "error"):
            raise ResultsError(f"{source}: status must be 'ok' or 'error', not {data['status']!r}")
        try:
            metrics = tuple(MetricValue(**{**m, **{k: _nan_if_none(m.get(k)) for k in ("value", "ci_low", "ci_high")},
                                            "value_range": tuple(m["value_range"]),
                                            "seed_values": tuple(_nan_if_none(v) for v in m.get("seed_values", ()))})
                            for m in data.get("metrics", ()))
        except TypeError as exc:
            raise ResultsError(f"{source}: malformed metric entry: {exc}") from exc
        return cls(**{**data, "metrics": metrics})


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


def _nan_if_none(x: Any) -> float:
    return float("nan") if x is None else float(x)


def result_path(out_dir: str | Path, task: str, explainer: str) -> Path:
    return Path(out_dir) / task / f"{explainer}.json"


def write_result(out_dir: str | Path, result: JobResult) -> Path:
    return atomic_write_json(result_path(out_dir, result.task, result.explainer), result.to_dict())


def read_result(path: str | Path) -> JobResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read result: {exc}") from exc
    return JobResult.from_dict(data, source=str(path))


def read_results_dir(out_dir: str | Path) -> tuple[list[JobResult], list[str]]:
    """Every readable job file under `out_dir` (<task>/<explainer>.json), and one message per file
    that could not be read (so a corrupt file is named, never silently dropped)."""
    results, problems = [], []
    for path in sorted(Path(out_dir).glob("*/*.json")):
        try:
            results.append(read_result(path))
        except ResultsError as exc:
            problems.append(str(exc))
    return results, problems
