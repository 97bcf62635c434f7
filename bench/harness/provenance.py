"""What a results folder needs to be reproduced: the run's configuration and its exact environment.

Retraining noise alone (another torch release, another thread count) moves subject weights, and
with them the numbers. So a run writes, beside its results:

- `run-config.json`: the validated run configuration (every section, flags applied), enough for
  `fexbench reproduce DIR` to run the same benchmark again;
- `environment.lock`: every installed distribution pinned (`name==version`), a constraints file
  that `pip install -c environment.lock -e .` accepts, so the environment can be rebuilt;
- `environment.json`: Python, platform and machine facts that a lock file cannot carry.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Any, Mapping

from fexbench.core.cache import atomic_write_json, atomic_write_text

RUN_CONFIG = "run-config.json"
LOCK_FILE = "environment.lock"
ENVIRONMENT = "environment.json"


def installed_distributions() -> dict[str, str]:
    """name -> version of every installed distribution (normalised names, sorted)."""
    out: dict[str, str] = {}
    for dist in distributions():
        name = (dist.metadata.get("Name") or "").strip()
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(out.items()))


def lock_text(packages: Mapping[str, str] | None = None) -> str:
    packages = installed_distributions() if packages is None else packages
    header = ("# The exact environment of this run (pip constraints): pip install -c environment.lock -e .\n"
              f"# python {platform.python_version()} on {platform.platform()}\n")
    return header + "".join(f"{name}=={version}\n" for name, version in packages.items() if name != "fexbench")


def parse_lock(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def config_record(config: Any) -> dict[str, Any]:
    """A run config (fexbench.harness.config.RunConfig) as plain JSON types."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if hasattr(value, "model_dump"):
            return plain(value.model_dump())
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        return value

    record = plain(config)
    record.pop("source", None)
    return record


def environment_facts() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    facts = {"python": sys.version, "platform": platform.platform(), "machine": platform.machine(),
             "cpu_count": os.cpu_count(), "usable_cpus": usable,
             "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch
        facts["torch_threads"] = torch.get_num_threads()
        facts["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return facts


def write_run_record(out_dir: str | Path, config: Any) -> None:
    out = Path(out_dir)
    atomic_write_json(out / RUN_CONFIG, config_record(config))
    atomic_write_text(out / LOCK_FILE, lock_text())
    atomic_write_json(out / ENVIRONMENT, environment_facts())


def read_run_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / RUN_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no run configuration here; was this folder written by `fexbench run`?") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the run configuration: {exc}") from None
    if not isinstance(data, dict) or "run" not in data:
        raise ValueError(f"{path}: not a run configuration (no 'run' section)")
    return data


def environment_differences(folder: str | Path) -> list[str]:
    """Packages whose installed version differs from the folder's lock file, one line each."""
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return [f"{path}: no lock file; the environment cannot be compared"]
    locked, here = parse_lock(path.read_text(encoding="utf-8")), installed_distributions()
    lines = []
    for name, version in locked.items():
        if here.get(name) != version:
            lines.append(f"{name}: locked {version}, installed {here.get(name, 'not installed')}")
    return lines
