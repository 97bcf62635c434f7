"""Named run configs shipped with fexbench: `fexbench run --preset NAME` (listed by `fexbench list`).

A preset is an ordinary TOML run config (datasets/configs/ documents the keys) kept as package
data here, so that `smoke` (every task and metric in under a minute, to check a plugin end to
end) and `full` (the publication-grade design) mean the same thing on every machine. A user's
config can start from one with `[run] preset = "smoke"`: its own keys override the preset's.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


class PresetError(FileNotFoundError):
    """An unknown preset name (the CLI prints it as one line, exit 2)."""


def names() -> list[str]:
    """The shipped presets, by name."""
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def path(name: str) -> Path:
    """The TOML file of preset `name`."""
    if name not in names():
        raise PresetError(f"unknown preset {name!r}; presets: {', '.join(names()) or 'none'}")
    return Path(str(resources.files(__name__) / f"{name}.toml"))


def description(name: str) -> str:
    """The preset file's first comment line, for `fexbench list`."""
    for line in path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
