"""Content-addressed cache: atomic writes, recorded digests checked on every read, one builder per key.

Every cached artefact is keyed by a hash of what it was computed from (the full config, the
data's content hash, the weights' hash), never by a file name: a change anywhere upstream gives a
new key, so a stale entry can never be read back (the trap CLIP-Dissect's activation cache fell in).
Arrays go to safetensors, metadata to JSON; nothing is ever unpickled.

A key says what an artefact should be, not that the bytes on disk still are: a disk can rot, a
write can be cut by a kill or a power cut, a person can edit a file. So `build_once` records the
sha256 of every file of an artefact in a manifest beside it (`<artefact>.sha256`, the format
`sha256sum -c` reads) when it is written, and checks the files against it whenever they are read;
a mismatch is named in one warning line on stderr and the artefact is rebuilt. The same helper
holds an OS file lock (`<artefact>.lock`) while it checks or builds, so two processes sharing a
cache never build one key twice: the second waits and then reads what the first wrote. The OS
releases the lock when its holder dies, even by SIGKILL.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
from filelock import FileLock, Timeout
from safetensors.numpy import load_file, save_file

T = TypeVar("T")

STALE_TEMP_SECONDS = 15 * 60  # a temp file untouched this long belongs to a killed writer
MANIFEST_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which races with threads


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


def warn(message: str) -> None:
    """One line on stderr: integrity problems must be seen, but they are repaired, not fatal."""
    print(f"fexbench: warning: {message}", file=sys.stderr, flush=True)


# -- atomic writes ---------------------------------------------------------------------------------
def sweep_stale_temps(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove `.*.tmp` files and folders left in `folder` by writers killed mid-write.

    Only entries untouched for `older_than_s` go, so a concurrent writer's temp file is safe."""
    removed, now = [], time.time()
    try:
        entries = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return removed
    for entry in entries:
        try:
            if now - entry.lstat().st_mtime < older_than_s:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        except OSError:
            continue
    return removed


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write through a temp file in the same folder, then rename: readers see old or new, never half.

    The file is flushed to disk before the rename (so a power cut leaves the old or the new file),
    gets the mode the umask gives an ordinary file (mkstemp would leave it 0600), and temp files of
    earlier writers that were killed are swept from the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp))


# -- digests -----------------------------------------------------------------------------------------
def manifest_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(target.name + MANIFEST_SUFFIX)


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(target.name + LOCK_SUFFIX)


def _artefact_files(target: Path) -> list[Path]:
    """The files that make up an artefact: the file itself, or every file under a folder."""
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and not p.name.endswith((".tmp", LOCK_SUFFIX)))
    return [target]


def seal(target: str | os.PathLike) -> Path:
    """Record the sha256 of every file of `target` (a file or a folder) in its manifest."""
    target = Path(target)
    lines = [f"{file_sha256(f)}  {f.relative_to(target.parent).as_posix()}\n" for f in _artefact_files(target)]
    return atomic_write_text(manifest_path(target), "".join(lines))


class UnsafeFile(ValueError):
    """A path that is not a regular file of a readable size: a FIFO, a device, a socket, a folder,
    a symlink to one of those, or a file over the size bound. Its message says which."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of `path`, read only if it is a regular file of at most `limit` bytes; otherwise
    UnsafeFile naming what it is. The path is examined with `os.lstat` before it is opened: a FIFO
    is never opened for a blocking read, a device (or a symlink to one, such as /dev/zero) never
    read, a huge file never loaded. A symlink is followed only to a regular file. The file is
    opened non-blocking and checked again on the open descriptor (`fstat`), so swapping the path
    for a FIFO between the check and the open changes nothing; at most `limit` + 1 bytes are read
    even if the file grows meanwhile. OSError (missing, no permission) passes through."""
    path = os.fspath(path)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(path)  # OSError for a dangling or looping symlink
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"a symlink to {_kind(st.st_mode)}, not a regular file")
    elif not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise UnsafeFile(f"{_size(st.st_size)}, over the {_size(limit)} limit")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UnsafeFile(f"{_size(st.st_size)}, over the {_size(limit)} limit")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(2 ** 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafeFile(f"grew past the {_size(limit)} limit while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


class IntegrityError(ValueError):
    """A cached artefact does not match the digests recorded when it was written."""


def verify(target: str | os.PathLike) -> None:
    """Raise IntegrityError naming the first file of `target` that is missing or differs from its
    manifest (or the manifest itself when it is missing or unreadable)."""
    target = Path(target)
    manifest = manifest_path(target)
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IntegrityError(f"{target}: no recorded digest (an interrupted write or an older cache)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{manifest}: unreadable digest manifest ({exc})") from None
    entries = []
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise IntegrityError(f"{manifest}: malformed digest manifest")
        entries.append((digest, target.parent / name))
    if not entries:
        raise IntegrityError(f"{manifest}: empty digest manifest")
    for digest, file in entries:
        try:
            actual = file_sha256(file)
        except OSError:
            raise IntegrityError(f"{file}: missing or unreadable") from None
        if actual != digest:
            raise IntegrityError(f"{file}: content does not match its recorded sha256")


def discard(target: str | os.PathLike) -> None:
    """Remove an artefact (file or folder) and its manifest."""
    target = Path(target)
    manifest_path(target).unlink(missing_ok=True)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


# -- one builder per key -----------------------------------------------------------------------------
def build_lock(target: str | os.PathLike) -> FileLock:
    """The lock beside `target`; re-entrant within a process (one lock object per path)."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), is_singleton=True)


class _Held:
    """Acquire a build lock, saying once on stderr when another process holds it."""

    def __init__(self, target: Path):
        self.target, self.lock = target, build_lock(target)

    def __enter__(self) -> None:
        try:
            self.lock.acquire(timeout=5)  # a short wait (the run's own prefetch process) passes unsaid
        except Timeout:
            print(f"fexbench: waiting for another process building {self.target}", file=sys.stderr, flush=True)
            self.lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()


def build_once(target: str | os.PathLike, load: Callable[[], T], build: Callable[[], T]) -> T:
    """The artefact at `target` (a file or a folder): read back when its files match the digests
    recorded when it was written, else built and sealed. Under the build lock, so concurrent
    processes build each key once.

    `build` writes `target` (atomically) and returns the value; `load` reads it. A digest mismatch
    or a sealed file that `load` cannot read is named in one warning line and rebuilt."""
    target = Path(target)
    with _Held(target):
        if target.exists() or manifest_path(target).exists():
            try:
                verify(target)
                return load()
            except IntegrityError as exc:
                warn(f"{exc}; recomputing it")
            except Exception as exc:  # sealed yet unreadable (e.g. a card that fails validation)
                warn(f"{target}: cannot be read back ({type(exc).__name__}: {exc}); recomputing it")
            discard(target)
        value = build()
        seal(target)
        return value


class ArrayCache:
    """Arrays stored under <root>/<kind>/<key>.safetensors, computed once per content key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / f"{stable_hash(key, 32)}.safetensors"

    def get_or_compute(self, kind: str, key: Mapping[str, Any],
                       compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        path = self.path(kind, key)

        def build() -> dict[str, np.ndarray]:
            arrays = dict(compute())
            atomic_save_arrays(path, arrays)
            return arrays

        return build_once(path, lambda: load_file(str(path)), build)

