"""Content-addressed cache and atomic writes.

Every cached artefact is keyed by a hash of what it was computed from (the full config, the
data's content hash, the weights' hash), never by a file name: a change anywhere upstream gives a
new key, so a stale entry can never be read back (the trap CLIP-Dissect's activation cache fell in).
Arrays go to safetensors, metadata to JSON; nothing is ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from safetensors.numpy import load_file, save_file


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of obj (sorted keys), truncated."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write through a temp file in the same folder, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp))


class ArrayCache:
    """Arrays stored under <root>/<kind>/<key>.safetensors, computed once per content key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / f"{stable_hash(key, 32)}.safetensors"

    def get_or_compute(self, kind: str, key: Mapping[str, Any],
                       compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        path = self.path(kind, key)
        if path.exists():
            try:
                return load_file(str(path))
            except Exception:  # a torn or foreign file: recompute rather than trust it
                path.unlink(missing_ok=True)
        arrays = dict(compute())
        atomic_save_arrays(path, arrays)
        return arrays
