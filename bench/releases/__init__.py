"""Releases shipped with fexbench (docs/release.md): `default.tar` is the default board's release
(leaderboard/default): its subjects and base networks, every replicate; the embedded CLIP,
captioner and caption bank; the design and the expected hash of every rendered split. Plain
`fexbench run` scores on it, so its numbers are the published default board's on any machine and
no subject is trained (`fexbench run --train` rebuilds the zoo instead). Safetensors, JSON and a
faiss index only: nothing in it is unpickled.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT = "default"


def names() -> list[str]:
    """The shipped releases, by name."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".tar"))


def path(name: str = DEFAULT) -> Path:
    """The archive of shipped release `name` (FileNotFoundError naming the shipped ones)."""
    if name not in names():
        raise FileNotFoundError(f"no shipped release {name!r}; shipped: {', '.join(names()) or 'none'}")
    return Path(str(resources.files(__name__) / f"{name}.tar"))
