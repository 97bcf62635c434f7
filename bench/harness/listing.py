"""What `fexbench list` shows (each task with its metrics, each explainer, every broken plugin),
kept in a small cache so that listing does not import torch.

Names come from entry-point metadata without imports (fexbench.core.registry), but descriptions
and metrics are class attributes of modules that import torch, transformers and open_clip at
their top. The listing is therefore built once by importing every entry, and stored with a
fingerprint of what could change it: each entry point (name, target, distribution and its
version), the interpreter, and the size and modification time of every .py file of the packages
that hold the entries. Any edit, install or upgrade of a plugin changes the fingerprint and the
listing is rebuilt. A listing with a broken entry is never stored: a missing dependency may be
installed at any time, and the next `fexbench list` must try again.

The cache file is $FEXBENCH_LIST_CACHE when set, else ~/.cache/fexbench (or $XDG_CACHE_HOME)
/list-<interpreter hash>.json.

The very first `fexbench list` of a fresh install would still pay that import (about 6 s here), so
the listing of the built-in entries ships with the package (`builtin_listing.json`, written by
`python -m fexbench.harness.listing --write`). When every entry point is a built-in one with the
target the shipped file names, the listing is read from it and nothing is imported. A test rebuilds
the listing from the code and fails when the shipped file differs, so it cannot go stale unnoticed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from fexbench.core import registry

FORMAT = 1
REGISTRIES = {"tasks": registry.tasks, "explainers": registry.explainers, "resources": registry.resources,
              "perf": registry.perf}


def cache_file() -> Path:
    explicit = os.environ.get("FEXBENCH_LIST_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fexbench" / f"list-{hashlib.sha256(sys.executable.encode()).hexdigest()[:12]}.json"


def _source_dirs(modules: set[str]) -> set[Path]:
    """The folders of the packages that hold the entry points' modules (found without importing them)."""
    dirs: set[Path] = set()
    for module in sorted(modules):
        top = module.split(".")[0]
        for name in (top, module):
            try:
                spec = importlib.util.find_spec(name)  # imports parent packages only (light __init__s)
            except (ImportError, ValueError):
                continue
            if spec is None:
                continue
            if spec.submodule_search_locations:
                dirs.update(Path(p) for p in spec.submodule_search_locations)
            elif spec.origin and spec.origin not in ("built-in", "frozen"):
                dirs.add(Path(spec.origin).parent)
    return dirs


def fingerprint() -> str:
    """A hash of everything the listing depends on (see the module docstring)."""
    h = hashlib.sha256(f"{FORMAT} {sys.executable} {sys.version}".encode())
    modules = set()
    for group, reg in REGISTRIES.items():
        for name, eps in sorted(reg._entry_points().items()):
            for ep in eps:
                dist = getattr(ep, "dist", None)
                h.update(f"{group} {name} {ep.value} {getattr(dist, 'name', '')} {getattr(dist, 'version', '')}\n".encode())
                modules.add(ep.value.split(":")[0])
    for folder in sorted(_source_dirs(modules)):
        for root, subdirs, files in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "__pycache__")))
            for f in sorted(files):
                if f.endswith(".py"):
                    st = os.stat(os.path.join(root, f))
                    h.update(f"{root}/{f} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build() -> dict[str, Any]:
    """Import every entry and read what `fexbench list` prints (slow: this loads torch)."""
    out: dict[str, Any] = {"tasks": [], "explainers": [], "broken": []}
    for group, reg in REGISTRIES.items():
        for name, why in reg.broken().items():
            out["broken"].append({"group": reg.group, "name": name, "error": why})
    broken = {(b["group"], b["name"]) for b in out["broken"]}
    for name in registry.tasks.names():
        if (registry.tasks.group, name) in broken:
            continue
        task = registry.tasks.get(name)
        out["tasks"].append({"name": name, "description": str(task.description), "metrics": [
            {"name": m.name, "description": m.description, "higher_is_better": bool(m.higher_is_better),
             "value_range": list(m.value_range), "chance": m.chance} for m in task.metrics]})
    for name in registry.explainers.names():
        if (registry.explainers.group, name) in broken:
            continue
        cls = registry.explainers.get(name)
        out["explainers"].append({"name": name, "description": str(cls.description), "oracle": bool(cls.is_oracle),
                                  "stochastic": bool(cls.stochastic), "seeds": int(cls.seeds)})
    return out


SHIPPED = Path(__file__).with_name("builtin_listing.json")


def entry_targets() -> dict[str, dict[str, str]]:
    """group -> entry name -> target ("module:attr"), from entry-point metadata (no imports), or
    None in place of the map when an entry is not a built-in one."""
    out: dict[str, dict[str, str]] = {}
    for group, reg in REGISTRIES.items():
        targets = {}
        for name, eps in sorted(reg._entry_points().items()):
            if len(eps) != 1 or registry._distribution(eps[0]) != registry.BUILTIN_DISTRIBUTION:
                return {}
            targets[name] = eps[0].value
        out[group] = targets
    return out


def shipped() -> dict[str, Any] | None:
    """The shipped listing, when the installed entry points are exactly the built-ins it describes."""
    targets = entry_targets()
    if not targets:
        return None
    try:
        saved = json.loads(SHIPPED.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if saved.get("format") != FORMAT or saved.get("entries") != targets:
        return None
    return saved.get("listing")


def write_shipped(path: Path = SHIPPED) -> Path:
    """Rebuild the built-in listing from the code and store it beside this module."""
    data = build()
    if data["broken"]:
        raise RuntimeError(f"cannot ship a listing with broken entries: {data['broken']}")
    text = json.dumps({"format": FORMAT, "entries": entry_targets(), "listing": data}, indent=1, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def listing(use_cache: bool = True) -> dict[str, Any]:
    """The listing: the shipped one when only built-ins are installed, else from the cache when its
    fingerprint matches, else built (and stored if nothing is broken). Entries registered at run
    time (register_task ...) are not in entry points: they bypass both."""
    if any(reg._extra for reg in REGISTRIES.values()):
        use_cache = False
    if use_cache:
        builtin = shipped()
        if builtin is not None:
            return builtin
    key = fingerprint() if use_cache else ""
    path = cache_file()
    if use_cache:
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == key:
                return saved["listing"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # absent or unreadable: rebuilt
    data = build()
    if use_cache and not data["broken"]:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"fingerprint": key, "listing": data}, f)
            os.replace(tmp, path)
        except OSError:  # a read-only home: list works, only slower
            if tmp:
                Path(tmp).unlink(missing_ok=True)
    return data


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the shipped listing of the built-in entries")
    parser.add_argument("--write", action="store_true", help=f"rebuild {SHIPPED.name} from the code")
    if parser.parse_args().write:
        print(write_shipped())
