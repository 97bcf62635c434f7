"""Releases: the trained subjects and shared resources a board rests on, shipped so others score on them.

CPU training is not bit-identical across machines, so a board can only be reproduced on the very
weights it was made with. A release is a folder (or one .tar / .zip archive of it) holding
`manifest.json` and, under `cache/`, the cache entries (fexbench.core.cache) of every subject of
every replicate and of the shared resources (embedded CLIP, captioner, caption bank); the rendered
data splits are not shipped (rendering is deterministic) but their expected content hashes are,
and a run on the release checks them. docs/release.md describes the format and the commands.

A release is hostile input until verified: the manifest is size-bounded JSON with every field
checked; every path is relative, normalised, inside the release folder and a regular file; every
file's size and sha256 are checked before anything is placed in the cache; an archive is unpacked
member by member (regular files and folders only, sizes bounded); a URL is downloaded with urllib
to a temp file of bounded size. Any problem is one ReleaseError line naming the file or field.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping

from fexbench.core import registry
from fexbench.core.cache import (MANIFEST_SUFFIX, IntegrityError, atomic_write, atomic_write_text, build_lock,
                                 discard, file_sha256, manifest_path, seal, verify)
from fexbench.core.release import ReleaseError, forbid_training
from fexbench.core.results import JobResult, read_results_dir, write_result
from fexbench.harness.isolation import SECRET_FILE

FORMAT = "fexbench-release"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RUN_CONFIG_FILE = "design/run-config.json"
SECRET_PATH = "design/run-secret"  # the cache's run secret (fexbench.harness.isolation), when the run had one
ROLES = ("subject", "resource", "ground-truth", "design")
# the [run] keys of the design a run on the release repeats (the protocol the board's numbers come from)
DESIGN_RUN_KEYS = ("seed", "replicates", "explainer_seeds")
# cache folders a release may ship and place: subjects, and the shared resources' own folders
SUBJECT_DIRS = ("subjects", "bases")  # bases: the per-replicate base networks subjects are fine-tuned from
RESOURCE_DIRS = ("clip", "captioner", "caption-bank", "caption-bank-index")
MAX_MANIFEST_BYTES = 64 << 20
MAX_ENTRIES = 200_000
DEFAULT_MAX_BYTES = 64 << 30  # a download or an unpacked archive; FEXBENCH_RELEASE_MAX_BYTES overrides it
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_PART = re.compile(r"^[A-Za-z0-9._+=-]{1,200}$")


def max_bytes() -> int:
    value = os.environ.get("FEXBENCH_RELEASE_MAX_BYTES")
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        return max(1, int(value))
    except ValueError:
        raise ReleaseError(f"FEXBENCH_RELEASE_MAX_BYTES: expected a number of bytes, got {value!r}") from None


# -- versions ------------------------------------------------------------------------------------------
def fexbench_version() -> str:
    from fexbench.core.results import package_versions
    return package_versions().get("fexbench", "0")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in str(text).split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts) or (0,)


def default_range(version: str) -> str:
    """The fexbench versions a release made with `version` works with: the same minor series."""
    v = (_version_tuple(version) + (0, 0))[:2]
    return f">={version},<{v[0]}.{v[1] + 1}"


def in_range(version: str, spec: str) -> bool:
    """Whether `version` satisfies a comma-separated range such as ">=0.1.0,<0.2" (ops >=, >, <=, <, ==)."""
    have = _version_tuple(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|>|<)\s*([0-9][0-9A-Za-z.+-]*)", clause)
        if not m:
            raise ReleaseError(f"{MANIFEST}: fexbench.requires: cannot read the clause {clause!r}")
        op, want = m.group(1), _version_tuple(m.group(2))
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        if not {">=": a >= b, "<=": a <= b, "==": a == b, ">": a > b, "<": a < b}[op]:
            return False
    return True


def task_version(name: str) -> int:
    return int(getattr(registry.tasks.get(name), "version", 1))


# -- paths -----------------------------------------------------------------------------------------------
def safe_relpath(value: Any, where: str) -> PurePosixPath:
    """A relative POSIX path of plain parts (no '..', no absolute path, no odd characters)."""
    if not isinstance(value, str) or not value or len(value) > 1000:
        raise ReleaseError(f"{where}: expected a relative path, got {value!r}"[:300])
    path = PurePosixPath(value)
    if path.is_absolute() or "\\" in value or any(not _SAFE_PART.match(p) or p in (".", "..") for p in path.parts) \
            or path.as_posix() != value:
        raise ReleaseError(f"{where}: unsafe path {value!r}: only relative paths inside the release are allowed"[:300])
    return path


def _inside(root: Path, rel: PurePosixPath, where: str) -> Path:
    """root/rel, refused if it escapes root through a symlink or is not a regular file."""
    path = root.joinpath(*rel.parts)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ReleaseError(f"{where}: {rel} is missing from the release") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReleaseError(f"{where}: {rel} is not a regular file")
    if not path.resolve().is_relative_to(root.resolve()):
        raise ReleaseError(f"{where}: {rel} escapes the release folder")
    return path


# -- the manifest ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artefact:
    role: str
    name: str
    path: str | None  # relative to the release folder; None for what is checked, not shipped
    sha256: str
    size: int | None
    cache_path: str | None = None  # the cache entry (file or folder) it belongs to, relative to the cache

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "path": self.path, "sha256": self.sha256, "size": self.size,
                "cache_path": self.cache_path}


@dataclass(frozen=True)
class Manifest:
    data: Mapping[str, Any]
    artefacts: tuple[Artefact, ...]
    digest: str  # sha256 of manifest.json's bytes: the release's identity

    @property
    def identity(self) -> dict[str, Any]:
        return {"digest": self.digest, "name": self.data.get("name"), "format_version": self.data["format_version"]}

    @property
    def design(self) -> Mapping[str, Any]:
        return self.data["design"]

    def by_role(self, role: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.role == role]


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ReleaseError(f"{MANIFEST}: {where}{key}: required field is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ReleaseError(f"{MANIFEST}: {where}{key}: wrong type ({type(value).__name__})")
    return value


def parse_manifest(raw: bytes) -> Manifest:
    """A manifest's bytes, every field checked; ReleaseError naming the first bad field."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ReleaseError(f"{MANIFEST}: {len(raw)} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReleaseError(f"{MANIFEST}: not valid JSON: {exc}"[:300]) from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{MANIFEST}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise ReleaseError(f"{MANIFEST}: format: expected {FORMAT!r}, got {data.get('format')!r}"[:300])
    version = _need(data, "format_version", int, "")
    if version != FORMAT_VERSION:
        raise ReleaseError(f"{MANIFEST}: format_version: this fexbench reads release format {FORMAT_VERSION}, "
                           f"the release is format {version}")
    fex = _need(data, "fexbench", dict, "")
    _need(fex, "requires", str, "fexbench.")
    tasks = _need(data, "tasks", dict, "")
    for name, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), int):
            raise ReleaseError(f"{MANIFEST}: tasks.{name}.version: expected an integer")
    design = _need(data, "design", dict, "")
    for key in ("run", "tasks", "resources"):
        _need(design, key, dict, "design.")
    entries = _need(data, "artefacts", list, "")
    if len(entries) > MAX_ENTRIES:
        raise ReleaseError(f"{MANIFEST}: artefacts: {len(entries)} entries; at most {MAX_ENTRIES}")
    artefacts, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"artefacts[{i}]."
        if not isinstance(entry, dict):
            raise ReleaseError(f"{MANIFEST}: artefacts[{i}]: expected an object")
        role = _need(entry, "role", str, where)
        if role not in ROLES:
            raise ReleaseError(f"{MANIFEST}: {where}role: expected one of {', '.join(ROLES)}, got {role!r}"[:300])
        name = _need(entry, "name", str, where)
        digest = _need(entry, "sha256", str, where)
        if not _HEX64.match(digest):
            raise ReleaseError(f"{MANIFEST}: {where}sha256: expected 64 lowercase hex digits")
        path, size, cache_path = entry.get("path"), entry.get("size"), entry.get("cache_path")
        if role == "ground-truth":
            if path is not None:
                raise ReleaseError(f"{MANIFEST}: {where}path: ground truth is checked, not shipped (expected null)")
        else:
            path = safe_relpath(path, f"{MANIFEST}: {where}path").as_posix()
            if path in seen or path == MANIFEST:
                raise ReleaseError(f"{MANIFEST}: {where}path: {path} is listed twice")
            seen.add(path)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ReleaseError(f"{MANIFEST}: {where}size: expected a non-negative integer")
        if role in ("subject", "resource"):
            rel = safe_relpath(cache_path, f"{MANIFEST}: {where}cache_path")
            allowed = SUBJECT_DIRS if role == "subject" else RESOURCE_DIRS
            if rel.parts[0] not in allowed or len(rel.parts) < 2:
                raise ReleaseError(f"{MANIFEST}: {where}cache_path: a {role} lives under "
                                   f"{' or '.join(a + '/' for a in allowed)}, got {cache_path!r}"[:300])
            inner = PurePosixPath(path[len("cache/"):]) if path.startswith("cache/") else None
            if inner is None or not (inner == rel or inner.is_relative_to(rel)):
                raise ReleaseError(f"{MANIFEST}: {where}path: {path} is not a file of {cache_path}")
        artefacts.append(Artefact(role, name, path, digest, size, cache_path))
    entries_of: dict[str, list[Artefact]] = {}
    for a in artefacts:
        if a.cache_path is not None:
            entries_of.setdefault(a.cache_path, []).append(a)
    for entry, files in entries_of.items():
        if len(files) > 1 and any(a.path == f"cache/{entry}" for a in files):
            raise ReleaseError(f"{MANIFEST}: cache_path {entry}: is both a file and a folder")
        parent = PurePosixPath(entry).parent
        while parent.parts:
            if parent.as_posix() in entries_of:
                raise ReleaseError(f"{MANIFEST}: cache_path {entry}: lies inside another entry, {parent}")
            parent = parent.parent
    return Manifest(data, tuple(artefacts), hashlib.sha256(raw).hexdigest())


def check_compatible(manifest: Manifest, tasks: Iterable[str] | None = None) -> None:
    """Refuse a release this fexbench cannot score on, naming what does not match: its fexbench
    version range, and the version of every task it was made with (of `tasks`, or all of them)."""
    spec = manifest.data["fexbench"]["requires"]
    have = fexbench_version()
    if not in_range(have, spec):
        raise ReleaseError(f"{MANIFEST}: fexbench.requires: the release works with fexbench {spec}; "
                           f"this is fexbench {have}")
    wanted = manifest.data["tasks"] if tasks is None else {t: manifest.data["tasks"].get(t) for t in tasks}
    for name, entry in wanted.items():
        if entry is None:
            raise ReleaseError(f"{MANIFEST}: tasks: the release has no task {name!r}; it has "
                               f"{', '.join(sorted(manifest.data['tasks']))}")
        try:
            local = task_version(name)
        except registry.RegistryError:
            raise ReleaseError(f"{MANIFEST}: tasks.{name}: no such task in this fexbench") from None
        if local != entry["version"]:
            raise ReleaseError(f"{MANIFEST}: tasks.{name}.version: the release was made with version "
                               f"{entry['version']} of task {name!r}; this fexbench has version {local}")
    world = manifest.data.get("world_version")
    if world is not None:
        from fexbench.data import world as world_module
        if world != world_module.VERSION:
            raise ReleaseError(f"{MANIFEST}: world_version: the release's splits were rendered by world version "
                               f"{world}; this fexbench renders version {world_module.VERSION}")


# -- opening: folder, archive, URL ---------------------------------------------------------------------
@dataclass
class Opened:
    """A verified release on disk; `close` removes what opening unpacked or downloaded."""

    root: Path
    manifest: Manifest
    source: str
    temp: Path | None = None

    def close(self) -> None:
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None

    def __enter__(self) -> "Opened":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(url: str, dest: Path, limit: int | None = None, timeout: float = 60.0) -> Path:
    """`url` into `dest` with urllib, refused (naming it) past `limit` bytes."""
    limit = max_bytes() if limit is None else limit
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked)
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise ReleaseError(f"{url}: {length} bytes; a release download is at most {limit} bytes "
                                   f"(FEXBENCH_RELEASE_MAX_BYTES)")
            total = 0
            with open(dest, "wb") as f:
                while chunk := response.read(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise ReleaseError(f"{url}: more than {limit} bytes; a release download is at most "
                                           f"{limit} bytes (FEXBENCH_RELEASE_MAX_BYTES)")
                    f.write(chunk)
    except ReleaseError:
        raise
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts
        raise ReleaseError(f"{url}: cannot download the release: {exc}"[:300]) from None
    return dest


def _archive_kind(path: Path) -> str | None:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        return None
    return None


def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    name = name.rstrip("/")
    if name in ("", "."):
        return None
    if name.startswith("./"):
        name = name[2:]
    return safe_relpath(name, f"{archive.name}: member")


def unpack(archive: Path, dest: Path, limit: int | None = None) -> Path:
    """Unpack a .tar (optionally compressed) or .zip into dest: regular files and folders only, every
    name a safe relative path, the total size bounded. Returns the release folder (dest, or its one
    top folder when the archive wraps everything in one)."""
    limit = max_bytes() if limit is None else limit
    kind = _archive_kind(archive)
    if kind is None:
        raise ReleaseError(f"{archive}: neither a release folder nor a .tar or .zip archive")
    total, count = 0, 0
    dest.mkdir(parents=True, exist_ok=True)

    def target(rel: PurePosixPath) -> Path:
        path = dest.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise ReleaseError(f"{archive.name}: member {rel} appears twice")
        return path

    def account(size: int, rel: PurePosixPath) -> None:
        nonlocal total, count
        total, count = total + size, count + 1
        if total > limit or count > MAX_ENTRIES:
            raise ReleaseError(f"{archive.name}: unpacks to more than {limit} bytes or {MAX_ENTRIES} files "
                               f"(at {rel}); refused (FEXBENCH_RELEASE_MAX_BYTES)")

    try:
        if kind == "tar":
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    rel = _member_path(member.name, archive)
                    if rel is None:
                        continue
                    if member.isdir():
                        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    if not member.isreg():
                        raise ReleaseError(f"{archive.name}: member {rel} is not a regular file (links and "
                                           f"devices are refused)")
                    account(member.size, rel)
                    source = tar.extractfile(member)
                    with source, open(target(rel), "wb") as out:
                        _copy_bounded(source, out, member.size, f"{archive.name}: member {rel}")
        else:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    rel = _member_path(info.filename, archive)
                    if rel is None:
                        continue
                    mode = (info.external_attr >> 16) & 0o170000
                    if info.is_dir():
                        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                        continue
                    if mode and not stat.S_ISREG(mode):
                        raise ReleaseError(f"{archive.name}: member {rel} is not a regular file (links are refused)")
                    account(info.file_size, rel)
                    with zf.open(info) as source, open(target(rel), "wb") as out:
                        _copy_bounded(source, out, info.file_size, f"{archive.name}: member {rel}")
    except ReleaseError:
        raise
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ReleaseError(f"{archive}: unreadable archive: {exc}"[:300]) from None
    if not (dest / MANIFEST).exists():
        tops = [p for p in dest.iterdir()]
        if len(tops) == 1 and tops[0].is_dir() and (tops[0] / MANIFEST).is_file():
            return tops[0]
    return dest


def _copy_bounded(source: io.BufferedIOBase, out: Any, size: int, where: str) -> None:
    written = 0
    while chunk := source.read(1 << 20):
        written += len(chunk)
        if written > size:
            raise ReleaseError(f"{where}: longer than its recorded size")
        out.write(chunk)


def open_release(source: str | os.PathLike, limit: int | None = None) -> Opened:
    """A release from a folder, an archive, an http(s) URL or the name of a release shipped with
    fexbench ("default": fexbench.releases; a folder or file of that name wins), verified in full."""
    text = os.fspath(source)
    if not is_url(text) and not Path(text).exists():
        from fexbench import releases
        if text in releases.names():
            text = os.fspath(releases.path(text))
    temp = None
    try:
        if is_url(text):
            temp = Path(tempfile.mkdtemp(prefix="fexbench-release-"))
            archive = download(text, temp / "download", limit)
            root = unpack(archive, temp / "release", limit)
            archive.unlink()
        else:
            path = Path(text)
            if not path.exists():
                raise FileNotFoundError(f"release {path} does not exist")
            if path.is_dir():
                root = path
            else:
                temp = Path(tempfile.mkdtemp(prefix="fexbench-release-"))
                root = unpack(path, temp / "release", limit)
        manifest = read_manifest(root)
        verify_files(root, manifest)
        return Opened(root, manifest, text, temp)
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise


def read_manifest(root: Path) -> Manifest:
    path = _inside(root, PurePosixPath(MANIFEST), str(root))
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ReleaseError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    return parse_manifest(path.read_bytes())


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every shipped file: inside the folder, a regular file, of its recorded size and sha256."""
    for artefact in manifest.artefacts:
        if artefact.path is None:
            continue
        rel = PurePosixPath(artefact.path)
        path = _inside(root, rel, MANIFEST)
        size = path.stat().st_size
        if size != artefact.size:
            raise ReleaseError(f"{rel}: {size} bytes, the manifest records {artefact.size} ({artefact.role} "
                               f"{artefact.name}); refused")
        if file_sha256(path) != artefact.sha256:
            raise ReleaseError(f"{rel}: content does not match its sha256 in the manifest ({artefact.role} "
                               f"{artefact.name}); refused")


# -- creating -------------------------------------------------------------------------------------------
def _sealed_files(cache: Path, target: Path) -> list[Path]:
    """The files of a sealed cache entry, as its digest manifest lists them (after checking them)."""
    try:
        verify(target)
    except IntegrityError as exc:
        raise ReleaseError(f"cannot release {target}: {exc}") from None
    files = []
    for line in manifest_path(target).read_text(encoding="utf-8").splitlines():
        _, _, name = line.partition("  ")
        path = target.parent / name
        if not path.resolve().is_relative_to(cache.resolve()):
            raise ReleaseError(f"{manifest_path(target)}: lists {name}, outside the cache")
        files.append(path)
    return files


def _hashes_by_replicate(result: JobResult) -> list[dict[str, str]]:
    reps = [dict(r.get("hashes", {})) for r in result.replicates] if result.replicates else []
    return reps or [dict(result.hashes)]


def _subject_entries(cache: Path, weights: set[str]) -> dict[str, str]:
    """cache-relative subject folder -> subject name, for the subjects with these weights' sha256
    and the base networks they were fine-tuned from."""
    found: dict[str, str] = {}
    cards: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}  # key -> its cache folder: subjects/, or bases/ for base networks
    for kind in ("subjects", "bases"):
        folder = cache / kind
        for card_path in sorted(folder.glob("*/card.json")) if folder.is_dir() else []:
            try:
                card = json.loads(card_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(card, dict):
                cards[card_path.parent.name] = card
                where[card_path.parent.name] = kind
    by_weights = {c.get("weights_sha256"): key for key, c in cards.items()}
    missing = sorted(weights - set(by_weights))
    if missing:
        raise ReleaseError(f"the run's results name subject weights {missing[0][:16]}... that are not in the cache "
                           f"{cache}; release from the cache the run used")
    todo = [by_weights[w] for w in sorted(weights)]
    while todo:
        key = todo.pop()
        card = cards.get(key)
        if card is None:
            raise ReleaseError(f"base network {key} of a released subject is not in the cache {cache}")
        if f"{where[key]}/{key}" in found:
            continue
        found[f"{where[key]}/{key}"] = str(card.get("name", key))
        base = (card.get("init") or {}).get("base")
        if isinstance(base, str):
            todo.append(base)
    return found


def _resource_entries(cache: Path) -> dict[str, str]:
    """Every sealed entry of the shared resources' cache folders (CLIP, captioner, caption bank)."""
    found = {}
    for top in RESOURCE_DIRS:
        folder = cache / top
        if not folder.is_dir():
            continue
        for sealed in sorted(folder.rglob(f"*{MANIFEST_SUFFIX}")):
            target = sealed.with_name(sealed.name[:-len(MANIFEST_SUFFIX)])
            if target.exists():
                rel = target.relative_to(cache).as_posix()
                found[rel] = rel
    return found


def create(run_dir: str | os.PathLike, out: str | os.PathLike, archive: bool = False, name: str | None = None,
           cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] = lambda s: None) -> Path:
    """A release of the run in `run_dir` (its results, run-config.json and the cache it names) in
    the new folder `out`; with `archive`, also `out`.tar. Returns the folder."""
    from fexbench.data import world
    from fexbench.harness.provenance import read_run_config

    run_dir, out = Path(run_dir), Path(out)
    try:
        config = read_run_config(run_dir)
    except ValueError as exc:
        raise ReleaseError(str(exc)) from None
    cache = Path(cache_dir or config["run"].get("cache_dir", ".fexbench-cache"))
    if not cache.is_dir():
        raise ReleaseError(f"{run_dir}/run-config.json: run.cache_dir: {cache} is not a folder")
    if out.exists() and any(out.iterdir()):
        raise ReleaseError(f"{out}: exists and is not empty; a release goes to a new folder")
    results, problems = read_results_dir(run_dir)
    if problems:
        raise ReleaseError(f"{run_dir}: {problems[0]}")
    results = [r for r in results if r.status == "ok"]
    if not results:
        raise ReleaseError(f"{run_dir}: no successful results; a release is made from a finished run")

    weights: set[str] = set()
    truth: dict[str, str] = {}
    tasks: dict[str, dict[str, Any]] = {}
    for result in sorted(results, key=lambda r: (r.task, r.explainer)):
        tasks[result.task] = {"version": int(result.config.get("code_versions", {}).get("task", 1))}
        for index, hashes in enumerate(_hashes_by_replicate(result)):
            for key, digest in sorted(hashes.items()):
                gt_name = f"{result.task}/replicate-{index}/{key}"
                if truth.setdefault(gt_name, digest) != digest:
                    raise ReleaseError(f"{run_dir}/{result.task}: explainers disagree on {gt_name}; the results "
                                       f"come from different runs")
                if key.startswith("weights:") and "/" not in key:
                    # "weights:<subject>/<variant>" are models derived in the run from a shipped subject
                    # (sanity-randomization's cascade): checked as ground truth, not shipped
                    weights.add(digest)

    artefacts: list[Artefact] = []
    out.mkdir(parents=True, exist_ok=True)

    def ship(role: str, name: str, cache_rel: str) -> None:
        target = cache / cache_rel
        for file in _sealed_files(cache, target):
            rel = file.relative_to(cache).as_posix()
            dest = out / "cache" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
            artefacts.append(Artefact(role, name, f"cache/{rel}", file_sha256(dest), dest.stat().st_size, cache_rel))

    for cache_rel, subject in sorted(_subject_entries(cache, weights).items()):
        ship("subject", subject, cache_rel)
    for cache_rel, resource in sorted(_resource_entries(cache).items()):
        ship("resource", resource, cache_rel)
    design_run = {k: config["run"][k] for k in DESIGN_RUN_KEYS if k in config["run"]}
    design = {"run": design_run, "tasks": {t: config.get("tasks", {}).get(t, {}) for t in sorted(tasks)},
              "resources": config.get("resources", {})}
    design_path = out / RUN_CONFIG_FILE
    design_path.parent.mkdir(parents=True, exist_ok=True)
    shipped = {**config, "run": {k: v for k, v in config["run"].items() if k not in ("out", "cache_dir", "release")}}
    design_path.write_text(json.dumps(shipped, indent=2, sort_keys=True) + "\n", encoding="utf-8")  # no local paths
    artefacts.append(Artefact("design", "run-config", RUN_CONFIG_FILE, file_sha256(design_path),
                              design_path.stat().st_size))
    secret = cache / SECRET_FILE
    if secret.is_file():  # the run secret the results were scored under: explainer seeds and aliases
        dest = out / SECRET_PATH
        shutil.copyfile(secret, dest)
        artefacts.append(Artefact("design", "run-secret", SECRET_PATH, file_sha256(dest), dest.stat().st_size))
    for gt_name, digest in sorted(truth.items()):
        artefacts.append(Artefact("ground-truth", gt_name, None, digest, None))

    version = fexbench_version()
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name or run_dir.resolve().name,
                "fexbench": {"made_with": version, "requires": default_range(version)},
                "tasks": tasks, "world_version": world.VERSION, "design": design,
                "artefacts": [a.to_dict() for a in artefacts]}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    log(f"release: {len(artefacts)} entries, {release_size(out)} bytes in {out}")
    if archive:
        write_archive(out, out.with_name(out.name + ".tar"))
    return out


def release_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def write_archive(folder: Path, dest: Path) -> Path:
    """An uncompressed, reproducible tar of the folder (sorted members, no owners, mtime 0): the
    weights are not compressible, and the same release gives the same archive bytes."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                tar.add(path, arcname=path.relative_to(folder).as_posix(), filter=clean)

    return atomic_write(dest, write)


# -- using ---------------------------------------------------------------------------------------------------
def place(opened: Opened, cache_dir: str | os.PathLike, log: Callable[[str], None] = lambda s: None) -> int:
    """Put the release's subjects and resources into the cache where the run looks for them, each
    entry under its build lock and sealed as the cache seals it. An entry already there with the
    same files is kept; one that differs (e.g. a subject trained on this machine) is replaced.
    Returns the number of entries written."""
    cache = Path(cache_dir)
    groups: dict[str, list[Artefact]] = {}
    for artefact in opened.manifest.artefacts:
        if artefact.role in ("subject", "resource"):
            groups.setdefault(artefact.cache_path, []).append(artefact)
    written = 0
    for cache_rel, files in sorted(groups.items()):
        rel = PurePosixPath(cache_rel)
        target = cache.joinpath(*rel.parts)
        is_folder = not (len(files) == 1 and files[0].path == f"cache/{cache_rel}")
        want = {PurePosixPath(a.path[len("cache/"):]).as_posix(): a.sha256 for a in files}
        with build_lock(target):
            if _matches(cache, target, want):
                continue
            discard(target)
            if is_folder:
                tmp = target.with_name(f".{target.name}.release.tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                for a in files:
                    inner = PurePosixPath(a.path[len("cache/"):]).relative_to(rel)
                    dest = tmp.joinpath(*inner.parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(opened.root.joinpath(*PurePosixPath(a.path).parts), dest)
                tmp.replace(target)
            else:
                source = opened.root.joinpath(*PurePosixPath(files[0].path).parts)
                atomic_write(target, lambda t, s=source: shutil.copyfile(s, t))
            seal(target)
            if not _matches(cache, target, want):
                raise ReleaseError(f"{target}: differs from the release after placing it (a disk problem?)")
            written += 1
    shipped = [a for a in opened.manifest.by_role("design") if a.name == "run-secret" and a.path]
    if shipped:  # score under the board's own secret, so stochastic explainers draw the board's seeds
        source = opened.root.joinpath(*PurePosixPath(shipped[0].path).parts)
        target = cache / SECRET_FILE
        with build_lock(target):
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                cache.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda t: shutil.copyfile(source, t))
                log(f"release: its run secret placed in {target} (explainer seeds and aliases are the board's)")
    log(f"release: {written} cache entries placed, {len(groups) - written} already there")
    return written


def _matches(cache: Path, target: Path, want: Mapping[str, str]) -> bool:
    """Whether the cache entry holds exactly the release's files (checked against its own seal too)."""
    if not target.exists():
        return False
    try:
        verify(target)
    except IntegrityError:
        return False
    have = {}
    for line in manifest_path(target).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        have[(target.parent.relative_to(cache) / name).as_posix()] = digest
    return have == dict(want)


@dataclass
class ReleaseRun:
    """A run on a release: its config (the release's design) and the checks after the run."""

    manifest: Manifest
    source: str
    resources_before: frozenset[str] = field(default_factory=frozenset)

    def finish(self, results: list[JobResult], out_dir: str | os.PathLike, cache_dir: str | os.PathLike) -> list[JobResult]:
        """Check the run's data and weights hashes against the release's ground truth (naming every
        split this machine rendered differently) and that no resource was built; then record the
        release's identity in every result file (config.release), for `publish` to merge runs made
        on the same release."""
        expected = {a.name: a.sha256 for a in self.manifest.by_role("ground-truth")}
        wrong = []
        for result in results:
            if result.status != "ok":
                continue
            for index, hashes in enumerate(_hashes_by_replicate(result)):
                for key, digest in sorted(hashes.items()):
                    name = f"{result.task}/replicate-{index}/{key}"
                    want = expected.get(name)
                    if want is not None and want != digest:
                        what = "subject weights" if key.startswith("weights:") else "rendered split"
                        wrong.append(f"{what} {name} (sha256 {digest[:12]}..., the release expects {want[:12]}...)")
        wrong = sorted(set(wrong))
        if wrong:
            raise ReleaseError(f"this machine does not reproduce the release's data: {wrong[0]}"
                               + (f" and {len(wrong) - 1} more" if len(wrong) > 1 else "")
                               + "; its numbers are not the release's (results left unmarked)")
        built = sorted(set(_resource_entries(Path(cache_dir))) - self.resources_before
                       - {a.cache_path for a in self.manifest.by_role("resource")})
        if built:
            raise ReleaseError(f"the run built resource {built[0]}, which the release lacks; its numbers are not "
                               f"the release's (results left unmarked)")
        identity = dict(self.manifest.identity, source=self.source)
        stamped = []
        for result in results:
            new = replace(result, config={**result.config, "release": identity}, digest=None)
            write_result(out_dir, new)
            stamped.append(new)
        return stamped


def release_config(config: Any, manifest: Manifest, tasks_given: bool = False) -> Any:
    """The run config for a run on the release: the release's seed, replicates and task and
    resource options; the user's explainers, explainer options and where/how to compute. With
    tasks_given, the user's tasks (each must be in the release)."""
    from fexbench.harness.config import ConfigError, validate
    from fexbench.harness.provenance import config_record

    record = config_record(config)
    design = manifest.design
    run = {k: v for k, v in record["run"].items() if v is not None}
    run.update({k: v for k, v in design["run"].items() if k in DESIGN_RUN_KEYS})
    names = list(config.task_names()) if tasks_given else sorted(design["tasks"])
    for name in names:
        if name not in design["tasks"]:
            raise ReleaseError(f"--tasks: the release has no task {name!r}; it has {', '.join(sorted(design['tasks']))}")
    run["tasks"] = names
    run["train"] = False
    data = {"run": run, "tasks": {n: design["tasks"][n] for n in names},
            "explainers": record.get("explainers", {}), "resources": design["resources"]}
    try:
        return validate(data, f"{MANIFEST} design")
    except ConfigError as exc:
        raise ReleaseError(str(exc)) from None


def prepare_run(config: Any, tasks_given: bool = False,
                log: Callable[[str], None] = lambda s: None) -> tuple[Any, ReleaseRun]:
    """Open and verify the release named by [run] release, refuse it if it does not match this
    fexbench (naming what), place its artefacts in the cache and forbid training. Returns the run
    config to run (the release's design) and the check to call on the results."""
    with open_release(config.run.release) as opened:
        manifest = opened.manifest
        check_compatible(manifest, config.task_names() if tasks_given else None)
        new = release_config(config, manifest, tasks_given)
        cache = Path(new.run.cache_dir)
        before = frozenset(_resource_entries(cache)) if cache.is_dir() else frozenset()
        place(opened, cache, log)
    forbid_training(f"a run on release {manifest.digest[:16]}")
    log(f"release {manifest.data.get('name')} ({manifest.digest[:16]}): verified, placed in {cache}; "
        f"design: seed {new.run.seed}, {new.run.replicates} replicate(s), tasks {', '.join(new.task_names())}")
    return new, ReleaseRun(manifest, str(config.run.release), before)


def describe(opened: Opened) -> str:
    m = opened.manifest
    counts = {role: len(m.by_role(role)) for role in ROLES}
    size = sum(a.size or 0 for a in m.artefacts)
    return (f"release {m.data.get('name')} (manifest sha256 {m.digest}): format {m.data['format_version']}, "
            f"fexbench {m.data['fexbench']['requires']}, tasks "
            f"{', '.join(t + ' v' + str(e['version']) for t, e in sorted(m.data['tasks'].items()))}; "
            f"{counts['subject']} subject files, {counts['resource']} resource files, "
            f"{counts['ground-truth']} expected hashes, {size} bytes; every file matches its sha256 and size")
