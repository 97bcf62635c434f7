"""`fexbench verify SUBMISSION`: the held-out test set of this benchmark, a private seed.

A submission is a results folder: the submitted method and the built-in explainers run on the
public seed (normally on the board's release). Its numbers can be tuned to that seed, or not come
from the submitted code at all. The maintainer re-runs the submitted explainer and the built-ins it
was compared with (the controls and the oracle present in the submission) on the same design
(the folder's run-config.json, re-read as `fexbench reproduce` does) with a secret run seed: new
world data, a new subject zoo (trained here), new explainer seeds. Then, per task, the submitted
method's public standing is set against its private one, on the task's headline metric (its
direction from the registered task, never from the files):

1. its value: the public and private 95% intervals overlap, or the private value is better;
2. the controls: every control it beat publicly (one-sided, Holm, as on the board) it still beats
   privately, or at least stays ahead of (a positive difference whose interval does not lie wholly
   below the public one: significance alone flips between seeds for a real advantage near the
   threshold);
3. the oracle: its gap to the oracle privately is not significantly larger than publicly (the two
   gap intervals overlap, or the private gap is smaller).

A task is "consistent" when all three hold, "INCONSISTENT: ..." naming each that fails. Exit 0 when
every task is consistent, 1 otherwise, 2 for unusable input (a missing or unsafe secret file, a
submission without the explainer, ...). The verification record (`verification.json` in the
output folder) holds the submission's digests, a hash of the secret seed (never the seed), and the
verdict per task: the site can mark verified rows from it.

The secret seed file holds one integer and must be readable by its owner only (mode 600): it is the
held-out set, and a file others can read is refused. The seed is never printed; the record keeps a
slow salted hash of it (PBKDF2), so the maintainer can later show which seed was used without the
hash giving it away to a search over the 2^32 seeds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fexbench.core.errors import UsageError

RECORD_FILE = "verification.json"
RECORD_FORMAT = 1
MAX_SEED_FILE_BYTES = 256
SEED_HASH_SALT = b"fexbench-verify-seed-v1"
SEED_HASH_ITERATIONS = 200_000


# -- the secret seed -------------------------------------------------------------------------------
def read_secret_seed(path: str | Path) -> int:
    """The integer in `path`: a regular file of a few bytes, readable by its owner only. Every
    refusal is a UsageError of one line that never shows the file's content."""
    from fexbench.core.cache import UnsafeFile, read_regular_file
    from fexbench.harness.config import SEED_MAX

    path = Path(path)
    try:
        st = os.stat(path)
        data = read_regular_file(path, MAX_SEED_FILE_BYTES)
    except FileNotFoundError:
        raise UsageError(f"secret seed file {path}: not found") from None
    except UnsafeFile as exc:
        raise UsageError(f"secret seed file {path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"secret seed file {path}: cannot read it ({exc.strerror or exc})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"secret seed file {path}: group or others may access it (mode "
                         f"{stat.S_IMODE(st.st_mode):03o}); the private seed must stay private: chmod 600 {path}")
    try:
        text = data.decode("ascii").strip()
        if not re.fullmatch(r"[0-9]+", text):
            raise ValueError
        seed = int(text)
    except (UnicodeDecodeError, ValueError):
        raise UsageError(f"secret seed file {path}: does not hold one non-negative integer") from None
    if seed > SEED_MAX:
        raise UsageError(f"secret seed file {path}: the seed is over {SEED_MAX} (seeds are unsigned 32-bit)")
    return seed


def seed_hash(seed: int) -> str:
    """A slow salted hash of the seed (PBKDF2-SHA256): what the verdict and the record show."""
    return "pbkdf2-sha256:" + hashlib.pbkdf2_hmac("sha256", str(int(seed)).encode(), SEED_HASH_SALT,
                                                  SEED_HASH_ITERATIONS).hex()


def _redacting(log: Callable[[str], None], seed: int) -> Callable[[str], None]:
    """`log` with the seed's digits, where they stand alone, replaced: the run's progress lines
    must not print the secret."""
    pattern = re.compile(rf"(?<![0-9]){seed}(?![0-9])")
    return lambda line: log(pattern.sub("<secret seed>", str(line)))


# -- the verdict -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskVerdict:
    task: str
    metric: str
    consistent: bool
    reasons: tuple[str, ...] = ()  # why not, one phrase each
    public: Mapping[str, Any] = field(default_factory=dict)  # value, ci, beats, oracle gap
    private: Mapping[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        if self.consistent:
            return (f"{self.task}: consistent ({self.metric}: public {_interval(self.public)}, "
                    f"private {_interval(self.private)})")
        return f"{self.task}: INCONSISTENT: " + "; ".join(self.reasons)


def _interval(side: Mapping[str, Any]) -> str:
    v, (lo, hi) = side.get("value", math.nan), side.get("ci", (math.nan, math.nan))
    return f"{_num(v)} [{_num(lo)}, {_num(hi)}]"


def _num(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) and math.isfinite(x) else "undefined"


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def standing(results: Sequence[Any], explainer: str, task: str) -> dict[str, Any]:
    """The explainer's standing on one task among `results` (that task's jobs): its headline value
    and interval, the controls it beats (the board's family 2) and the oracle's gap to it (family 3)."""
    from fexbench.analysis.comparisons import NotComparable, headline, rank_task

    metric, higher_is_better, _ = headline(task)
    rows = [r for r in results if r.task == task]
    mine = next((r for r in rows if r.explainer == explainer), None)
    out: dict[str, Any] = {"metric": metric, "higher_is_better": higher_is_better, "status": getattr(mine, "status", "missing")}
    if mine is None or mine.status != "ok":
        out["error"] = (getattr(mine, "error", None) or "no result")[:300]
        return out
    try:
        m = mine.metric(metric)
        out.update(value=m.value, ci=(m.ci_low, m.ci_high), digest=mine.digest)
    except KeyError:
        out.update(value=math.nan, ci=(math.nan, math.nan))
    try:
        ranking = rank_task(rows, metric)
    except NotComparable as exc:
        out["ranking"] = str(exc)
        return out
    if ranking is None:
        return out
    out["role"] = ranking.roles.get(explainer, "method")
    out["controls"] = sorted(n for n, r in ranking.roles.items() if r == "control")
    out["beats"] = dict(ranking.beats.get(explainer, {}))
    sign = 1.0 if higher_is_better else -1.0
    versus = {}
    for control in out["beats"]:
        c = ranking.comparisons.get((explainer, control))
        if c is not None:  # explainer - control, in the better direction (positive: ahead of the control)
            versus[control] = {"difference": sign * c.difference, "ci": tuple(sorted((sign * c.low, sign * c.high)))}
    out["versus"] = versus
    gap = ranking.oracle_gaps.get(explainer)
    if gap is not None:
        out["oracle_gap"] = {"oracle": gap.oracle, "difference": gap.difference, "ci": (gap.low, gap.high),
                             "significant": gap.significant}
    if explainer in ranking.excluded:
        out["excluded"] = ranking.excluded[explainer]
    return out


def _lost(control: str, public: Mapping[str, Any], private: Mapping[str, Any]) -> bool:
    """A control the explainer beat publicly (significantly, after Holm) and does not beat privately
    is lost when privately it is not even ahead of it (difference <= 0), or its private difference
    interval lies wholly below the public one. Significance alone is not the test: a real advantage
    near the threshold is significant on one seed and not on another."""
    pv, qv = (public.get("versus") or {}).get(control), (private.get("versus") or {}).get(control)
    if not qv or not _finite(qv["difference"]):
        return True  # no private comparison at all
    if qv["difference"] <= 0:
        return True
    return bool(pv and _finite(pv["ci"][0], qv["ci"][1]) and qv["ci"][1] < pv["ci"][0])


def judge(task: str, public: Mapping[str, Any], private: Mapping[str, Any]) -> TaskVerdict:
    """The verdict on one task from the two standings (the module docstring's three checks)."""
    metric, hib = public.get("metric", "?"), bool(public.get("higher_is_better", True))
    reasons: list[str] = []
    if private.get("status") != "ok":
        reasons.append(f"the private run gave no result ({private.get('status')}: {private.get('error', '')})")
        return TaskVerdict(task, metric, False, tuple(reasons), public, private)
    pv, (plo, phi) = public.get("value", math.nan), public.get("ci", (math.nan, math.nan))
    qv, (qlo, qhi) = private.get("value", math.nan), private.get("ci", (math.nan, math.nan))
    if _finite(pv) and not _finite(qv):
        reasons.append(f"{metric} public {_interval(public)}, private undefined")
    elif _finite(pv, plo, phi, qv, qlo, qhi):
        overlap = max(plo, qlo) <= min(phi, qhi)
        better = qv >= pv if hib else qv <= pv
        if not (overlap or better):
            reasons.append(f"public {_interval(public)}, private {_interval(private)}")
    lost = [c for c, beaten in (public.get("beats") or {}).items()
            if beaten and not (private.get("beats") or {}).get(c, False) and _lost(c, public, private)]
    if lost:
        reasons.append("beat " + ", ".join(lost) + " publicly, not privately")
    pg, qg = public.get("oracle_gap"), private.get("oracle_gap")
    if pg and qg and _finite(pg["difference"], *pg["ci"], qg["difference"], *qg["ci"]):
        # the gap is oracle - explainer in the better direction: larger is worse for the explainer
        if qg["ci"][0] > pg["ci"][1]:
            reasons.append(f"gap to {pg['oracle']}: public {_num(pg['difference'])} [{_num(pg['ci'][0])}, "
                           f"{_num(pg['ci'][1])}], private {_num(qg['difference'])} [{_num(qg['ci'][0])}, "
                           f"{_num(qg['ci'][1])}]")
    return TaskVerdict(task, metric, not reasons, tuple(reasons), public, private)


# -- the command's work ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    verdicts: tuple[TaskVerdict, ...]
    record: Mapping[str, Any]
    record_path: Path
    out: Path

    @property
    def consistent(self) -> bool:
        return bool(self.verdicts) and all(v.consistent for v in self.verdicts)

    @property
    def exit_code(self) -> int:
        return 0 if self.consistent else 1

    def text(self) -> str:
        lines = [v.line for v in self.verdicts]
        lines.append(f"secret seed: {self.record['secret_seed_hash'][:30]}...; record: {self.record_path}")
        lines.append("VERIFIED: every task consistent on the private seed" if self.consistent
                     else "NOT VERIFIED: " + ", ".join(v.task for v in self.verdicts if not v.consistent)
                     + " inconsistent on the private seed")
        return "\n".join(lines)


def resolve_submitted(spec: str) -> tuple[str, type]:
    """The submitted explainer (a registered name, or module:Class, imported and registered under
    its name for this process) -> (name, class)."""
    from fexbench.core import registry
    from fexbench.testing import resolve_explainer

    name, cls = resolve_explainer(spec)
    try:
        known = registry.explainers.get(name)
    except registry.RegistryError:
        known = None
    if known is None:
        registry.register_explainer(name, cls)
    elif known is not cls:
        raise UsageError(f"--explainer {spec!r}: its name {name!r} is already registered here by another class "
                         f"({registry.explainers.source(name)})")
    return name, cls


def verify(submission: str | Path, explainer: str, secret_seed_file: str | Path, out: str | Path | None = None,
           cache_dir: str | Path | None = None, tasks: Sequence[str] | None = None,
           options: Mapping[str, Any] | None = None, log: Callable[[str], None] = print) -> Verification:
    from fexbench.analysis.comparisons import role
    from fexbench.analysis.reproduce import design_config, run_design
    from fexbench.core.cache import atomic_write_json, file_sha256
    from fexbench.core.results import read_results_dir
    from fexbench.harness.config import ConfigError, RunSection
    from fexbench.harness.provenance import RUN_CONFIG, read_run_config

    submission = Path(submission)
    seed = read_secret_seed(secret_seed_file)
    try:
        record = read_run_config(submission)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    public_seed = (record.get("run") or {}).get("seed", RunSection.model_fields["seed"].default)
    if seed == public_seed:
        raise UsageError(f"secret seed file {secret_seed_file}: holds the submission's public run seed; "
                         "a private seed must differ from it")
    published, problems = read_results_dir(submission)
    for problem in problems:
        log(f"verify: skipped submitted file: {problem}")
    name, cls = resolve_submitted(explainer)
    mine = {r.task: r for r in published if r.explainer == name}
    if not mine:
        found = sorted({r.explainer for r in published})
        raise UsageError(f"{submission}: no result of explainer {name!r} (it holds: {', '.join(found) or 'none'})")
    wanted = sorted(t for t, r in mine.items() if r.status == "ok")
    if tasks:
        unknown = sorted(set(tasks) - set(mine))
        if unknown:
            raise UsageError(f"--tasks: {', '.join(unknown)} not in the submission for {name!r} "
                             f"(it has: {', '.join(sorted(mine))})")
        wanted = [t for t in wanted if t in set(tasks)]
    if not wanted:
        raise UsageError(f"{submission}: explainer {name!r} has no ok result to verify")
    # the built-ins it was compared with: the controls and the oracle of the submission, by their registered role
    references = sorted({r.explainer for r in published if r.task in wanted and r.explainer != name
                         and r.status == "ok" and role(r.explainer) in ("control", "oracle")})
    explainers = [name] + references
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="fexbench-verify-"))
    if out.resolve() == submission.resolve() or submission.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out}: inside the submission folder; the private run goes elsewhere")
    run = {"out": str(out), "seed": seed, "resume": False, "tasks": list(wanted), "explainers": explainers,
           "release": None, "train": True, "preset": None,
           # never the cache the submission names: the maintainer's own (or the default)
           "cache_dir": str(cache_dir) if cache_dir is not None else RunSection.model_fields["cache_dir"].default}
    if options is not None:
        record = {**record, "explainers": {**(record.get("explainers") or {}), name: dict(options)}}
    try:
        config = design_config(record, f"{submission}/{RUN_CONFIG}", run, explainers)
    except ConfigError as exc:
        raise UsageError(str(exc).replace(str(seed), "<secret seed>")) from None
    say = _redacting(log, seed)
    say(f"verify: {name} and {', '.join(references) or 'no built-ins'} on {', '.join(wanted)}, "
        f"the submission's design on a private seed, into {out}")
    fresh = run_design(config, say)
    verdicts = tuple(judge(t, standing([r for r in published if r.explainer in explainers], name, t),
                           standing(fresh, name, t)) for t in wanted)
    run_config = submission / RUN_CONFIG
    result = {
        "format": RECORD_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fexbench": _version(),
        "submission": {"folder": str(submission), "run_config_sha256": file_sha256(run_config),
                       "public_seed": public_seed,
                       "digests": {f"{r.task}/{r.explainer}": r.digest for r in sorted(
                           (r for r in published if r.task in wanted and r.explainer in explainers),
                           key=lambda r: (r.task, r.explainer))}},
        "explainer": {"name": name, "spec": explainer, "class": f"{cls.__module__}:{cls.__qualname__}",
                      "version": getattr(cls, "version", None), "options": config.explainer_configs().get(name, {})},
        "compared_with": references,
        "secret_seed_hash": seed_hash(seed),
        "private_results": str(out),
        "private_digests": {f"{r.task}/{r.explainer}": r.digest for r in sorted(fresh, key=lambda r: (r.task, r.explainer))},
        "verified": bool(verdicts) and all(v.consistent for v in verdicts),
        "tasks": {v.task: {"verdict": "consistent" if v.consistent else "INCONSISTENT", "metric": v.metric,
                           "reasons": list(v.reasons), "public": _plain(v.public), "private": _plain(v.private)}
                  for v in verdicts},
    }
    path = atomic_write_json(out / RECORD_FILE, result)
    return Verification(verdicts, result, path, out)


def _plain(side: Mapping[str, Any]) -> dict[str, Any]:
    """A standing as JSON (NaN as null)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, Mapping):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return json.loads(json.dumps(clean(dict(side))))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("fexbench")
    except PackageNotFoundError:
        return "unknown"
