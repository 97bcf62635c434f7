"""`fexbench compare BASE NEW`: is a new version of an explainer better or worse than the old one?

A regression gate for an explainer's CI. BASE and NEW are result folders (or single result files)
of two runs of the same task versions against the same ground truth. Every (task, explainer) job
that is ok in BASE is looked up in NEW and compared on every metric, NEW - BASE, paired over the
same units and replicates (fexbench.analysis.comparisons.compare_results), with the interval, the
p-value and P(NEW > BASE) (`P_NEW_HIGHER`). A row's verdict respects the metric's direction:
"better" or "worse" when the interval excludes zero, else "no detectable change".

Coverage: a job ok in BASE that NEW lacks, that errored (or was skipped) in NEW, or whose NEW file
fails its digest or validation check, is named, and so is a task of BASE that NEW does not cover
at all (`Coverage`); each of these fails the gate, since a job that was not compared is not known
to be no worse.

`explainers=(A, B)` compares explainer A (of BASE) with explainer B (of NEW) per task: two
different explainers, so the words are neutral ("A higher", "A lower", "no significant
difference"); "regression" is kept for BASE -> NEW of one explainer.

Exit status: 1 when some job's headline metric (its task's first) is worse by more than the
margin with the whole interval beyond it (the CI lies entirely past -margin in the bad
direction), or when coverage fails; 0 otherwise; 2 for unusable input (the CLI's convention). A
margin absorbs differences too small to matter, so a stochastic explainer run twice with other
seeds does not raise a false alarm. Results scored against different ground truth are refused,
naming the differing hashes, unless --force (then compared with a warning).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fexbench.core import stats
from fexbench.core.results import JobResult, ResultsError, no_results_message, read_result
from fexbench.core.text import display_text
from fexbench.analysis.comparisons import NotComparable, compare_results, differing_ground_truth, replicated

P_NEW_HIGHER = (
    "P(NEW > BASE) is the probability that NEW's value of the metric is higher than BASE's (higher, "
    "not better: for a metric where lower is better, a value near 1 means NEW is worse). With two "
    "or more replicates it is the share of (NEW replicate, BASE replicate) pairs in which NEW's "
    "value is higher, ties counting half (as rliable does, Agarwal et al. 2021). With one "
    "replicate it is the share of unit-bootstrap draws (the same units drawn for both; clusters, "
    "then units, when the units carry cluster ids) in which the paired mean difference NEW - BASE "
    "is above zero, ties counting half. 0.5: the two cannot be told apart.")


class CompareError(FileNotFoundError):
    """Unusable input (no such folder, nothing in common): one line, exit 2."""


@dataclass(frozen=True)
class Row:
    task: str
    base: str  # explainer of BASE
    new: str  # explainer of NEW (another explainer than `base`: a comparison of two explainers)
    metric: str
    headline: bool
    higher_is_better: bool
    base_value: float
    new_value: float
    difference: float  # NEW - BASE
    low: float
    high: float
    p_value: float
    prob_higher: float  # P(NEW > BASE): P_NEW_HIGHER
    verdict: str  # better | worse | no detectable change | not comparable; "<A> higher" | "<A> lower" |
    # "no significant difference" when `base` and `new` are two explainers
    beyond_margin: bool  # headline metric worse beyond the margin (for one explainer: a regression)
    note: str = ""

    @property
    def two_explainers(self) -> bool:
        return self.base != self.new


@dataclass(frozen=True)
class Loaded:
    """What one side holds: ok results, results that are not ok (error or skipped), and files that
    could not be read or failed their digest or validation check, keyed (task folder, file stem)."""
    path: Path
    ok: list[JobResult]
    not_ok: list[JobResult] = field(default_factory=list)
    invalid: dict[tuple[str, str], str] = field(default_factory=dict)
    single_file: bool = False

    def tasks(self) -> set[str]:
        """Every task NEW holds anything of (ok, not ok or an unreadable file)."""
        return {r.task for r in self.ok + self.not_ok} | {t for t, _ in self.invalid}


def read_side(path: str | Path) -> Loaded:
    """A result folder (<task>/<explainer>.json) or one result file, with every file that could not
    be read named (stderr says so too) and results that are not ok kept apart."""
    path = Path(path)
    if path.is_file():
        try:
            results, invalid = [read_result(path)], {}
        except ResultsError as exc:
            results, invalid = [], {(path.parent.name, path.stem): str(exc)}
        single = True
    elif path.is_dir():
        results, invalid, single = [], {}, False
        for file in sorted(path.glob("*/*.json")):  # as fexbench.core.results.read_results_dir
            try:
                result = read_result(file)
            except ResultsError as exc:
                invalid[(file.parent.name, file.stem)] = str(exc)
                print(f"compare: skipped {display_text(exc)}", file=sys.stderr)
                continue
            if result.digest is None:
                print(f"compare: {display_text(file)}: no recorded digest (written by an older fexbench); "
                      "included unverified", file=sys.stderr)
            results.append(result)
    else:
        raise CompareError(f"{path}: no such result folder or file")
    return Loaded(path, [r for r in results if r.status == "ok"], [r for r in results if r.status != "ok"],
                  invalid, single)


def load(path: str | Path) -> list[JobResult]:
    """A result folder (<task>/<explainer>.json) or one result file; only ok results count."""
    side = read_side(path)
    if not side.ok:
        only = next(iter(side.invalid.values()), None) if side.single_file else None
        raise CompareError(only or no_results_message(path, f"{path}: holds no ok result"))
    return side.ok


@dataclass(frozen=True)
class Coverage:
    """Which jobs of BASE were compared, and why the others were not. Names are "task/explainer"
    (the explainer of NEW); `failed` when any job ok in BASE was not compared."""
    base_jobs: tuple[str, ...]  # the jobs ok in BASE that should be compared (as named in NEW)
    compared: tuple[str, ...]
    missing: tuple[str, ...] = ()  # no result file in NEW
    errored: tuple[str, ...] = ()  # "task/explainer (status: error)"
    invalid: tuple[str, ...] = ()  # "task/explainer (why the file was refused)"
    tasks_missing: tuple[str, ...] = ()  # tasks of BASE of which NEW holds nothing
    not_ok_in_base: tuple[str, ...] = ()  # BASE jobs that are not ok: not compared, not gated
    only_in_new: tuple[str, ...] = ()  # NEW jobs with no ok BASE job: not compared

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.errored or self.invalid or self.tasks_missing)

    def line(self) -> str:
        def names(xs: Sequence[str]) -> str:
            return ", ".join(display_text(x) for x in xs)

        parts = [f"coverage: {len(self.compared)} of {len(self.base_jobs)} BASE jobs compared"]
        for label, xs in (("tasks of BASE not in NEW", self.tasks_missing), ("missing in NEW", self.missing),
                          ("errored in NEW", self.errored), ("invalid in NEW", self.invalid),
                          ("not ok in BASE (not compared)", self.not_ok_in_base),
                          ("not in BASE (not compared)", self.only_in_new)):
            if xs:
                parts.append(f"{label}: {names(xs)}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"base_jobs": len(self.base_jobs), "compared": list(self.compared), "missing": list(self.missing),
                "errored": list(self.errored), "invalid": list(self.invalid),
                "tasks_missing": list(self.tasks_missing), "not_ok_in_base": list(self.not_ok_in_base),
                "only_in_new": list(self.only_in_new), "failed": self.failed}


def _short(text: str | None, limit: int = 160) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def match(base: Loaded, new: Loaded, explainers: tuple[str, str] | None = None
          ) -> tuple[list[tuple[JobResult, JobResult]], Coverage]:
    """(BASE, NEW) pairs and what could not be paired. Jobs pair by task and explainer; two single
    files pair whatever their explainer; `explainers` (A, B) pairs A of BASE with B of NEW per task."""
    if explainers:
        a, b = explainers
        bases = {r.task: r for r in base.ok if r.explainer == a}
        if not bases:
            raise CompareError(f"no ok result of explainer {a!r} in the given results")
        if not any(r.explainer == b for r in new.ok + new.not_ok) and all(e != b for _, e in new.invalid):
            raise CompareError(f"no result of explainer {b!r} in the given results")
        wanted = [(bases[t], (t, b)) for t in sorted(bases)]
        not_ok_base = [r for r in base.not_ok if r.explainer == a]
        return _gather(new, wanted, not_ok_base, only_new=(), base_tasks=set())
    if base.single_file and new.single_file and len(base.ok) == 1:
        found = new.ok + new.not_ok
        other = (found[0].task, found[0].explainer) if found else next(iter(new.invalid))
        return _gather(new, [(base.ok[0], other)], base.not_ok, only_new=(), base_tasks=set())
    bases = {(r.task, r.explainer): r for r in base.ok}
    new_keys = {(r.task, r.explainer) for r in new.ok + new.not_ok} | set(new.invalid)
    only_new = tuple(sorted(f"{t}/{e}" for t, e in new_keys - set(bases)))
    return _gather(new, [(bases[k], k) for k in sorted(bases)], base.not_ok, only_new, {t for t, _ in bases})


def _gather(new: Loaded, wanted: list[tuple[JobResult, tuple[str, str]]], not_ok_base: Sequence[JobResult],
            only_new: tuple[str, ...], base_tasks: set[str]) -> tuple[list[tuple[JobResult, JobResult]], Coverage]:
    """Each wanted (BASE result, (task, explainer) of NEW) looked up in NEW."""
    ok = {(r.task, r.explainer): r for r in new.ok}
    not_ok = {(r.task, r.explainer): r for r in new.not_ok}
    pairs_, compared, missing, errored, invalid = [], [], [], [], []
    for b, (task, explainer) in wanted:
        name = f"{task}/{explainer}"
        if (task, explainer) in ok:
            pairs_.append((b, ok[(task, explainer)]))
            compared.append(name)
        elif (task, explainer) in not_ok:
            r = not_ok[(task, explainer)]
            errored.append(f"{name} ({r.status}: {_short(r.error) or 'no message'})")
        elif (task, explainer) in new.invalid:
            invalid.append(f"{name} ({_short(new.invalid[(task, explainer)])})")
        else:
            missing.append(name)
    tasks_missing = tuple(sorted(base_tasks - new.tasks()))
    coverage = Coverage(tuple(f"{t}/{e}" for _, (t, e) in wanted), tuple(compared), tuple(missing), tuple(errored),
                        tuple(invalid), tasks_missing, tuple(sorted(f"{r.task}/{r.explainer}" for r in not_ok_base)),
                        only_new)
    return pairs_, coverage


def pairs(base: Sequence[JobResult], new: Sequence[JobResult],
          explainers: tuple[str, str] | None = None) -> list[tuple[JobResult, JobResult]]:
    """(BASE, NEW) pairs of ok results: the same task and explainer; two single results pair
    whatever their explainer; `explainers` (A, B) pairs A of BASE with B of NEW per task."""
    single = len(base) == 1 and len(new) == 1
    found, _ = match(Loaded(Path("BASE"), list(base), single_file=single),
                     Loaded(Path("NEW"), list(new), single_file=single), explainers)
    return found


def _verdict(diff: float, low: float, high: float, higher_is_better: bool) -> str:
    if not all(math.isfinite(x) for x in (diff, low, high)):
        return "not comparable"
    good_low, good_high = (low, high) if higher_is_better else (-high, -low)
    if good_low > 0:
        return "better"
    if good_high < 0:
        return "worse"
    return "no detectable change"


def _neutral_verdict(base_explainer: str, diff: float, low: float, high: float) -> str:
    """Two explainers A (BASE) and B (NEW): which one's value is higher, in values, not in merit."""
    if not all(math.isfinite(x) for x in (diff, low, high)):
        return "not comparable"
    if high < 0:
        return f"{base_explainer} higher"
    if low > 0:
        return f"{base_explainer} lower"
    return "no significant difference"


def unit_probability(new: JobResult, base: JobResult, metric: str, n_resamples: int = 2000) -> float:
    """P(NEW > BASE) over units when one replicate is defined in both: the share of unit-bootstrap
    draws (fexbench.core.stats.hierarchical_bootstrap, the same draws for both, as in
    stats.compare) in which the paired mean difference NEW - BASE is above zero, ties counting half."""
    a, b = replicated(new, metric), replicated(base, metric)
    both = np.flatnonzero(np.isfinite(a.replicate_values()) & np.isfinite(b.replicate_values()))
    if both.size != 1:
        return math.nan
    if len(a.units) > 1:
        i = int(both[0])
        a, b = (stats.Replicated(x.statistic, (x.replicates[i],), x.metric, (x.clusters[i],)) for x in (a, b))
    dist = (stats.hierarchical_bootstrap(a, n_resamples, new.seed)
            - stats.hierarchical_bootstrap(b, n_resamples, new.seed))
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return math.nan
    return float(np.mean(dist > 0) + 0.5 * np.mean(dist == 0))


def compare_pair(base: JobResult, new: JobResult, margin: float = 0.0, force: bool = False,
                 n_resamples: int = 2000, metric: str | None = None) -> list[Row]:
    """Every metric of one (BASE, NEW) pair; the first metric is the headline. With `metric`, only
    that one, and it is the headline."""
    rows = []
    names = [m.name for m in new.metrics]
    chosen = [m for m in base.metrics if m.name in names and (metric is None or m.name == metric)]
    if metric is not None and not chosen:
        raise CompareError(f"{base.task}/{base.explainer}: no metric {metric!r} in both results; metrics: "
                           + ", ".join(m.name for m in base.metrics))
    for i, metric in enumerate(chosen):
        new_metric = new.metric(metric.name)
        hib = metric.higher_is_better
        try:
            c = compare_results(new, base, metric.name, force=force, n_resamples=n_resamples)
            diff, low, high, p, prob, note = c.difference, c.low, c.high, c.p_value, c.prob_improvement, c.method
            if c.replicates == 1:  # over units, not the sign of the one difference (P_NEW_HIGHER)
                prob = unit_probability(new, base, metric.name, n_resamples)
        except (NotComparable, ValueError) as exc:
            if isinstance(exc, NotComparable) and "ground truth" in str(exc):
                raise
            diff = low = high = p = prob = math.nan
            note = str(exc)
        two = base.explainer != new.explainer
        verdict = _neutral_verdict(base.explainer, diff, low, high) if two else _verdict(diff, low, high, hib)
        bad_edge = high if hib else -low  # the interval's edge nearest to "no change", in the good direction
        beyond = i == 0 and math.isfinite(bad_edge) and bad_edge < -margin
        rows.append(Row(base.task, base.explainer, new.explainer, metric.name, i == 0, hib, metric.value,
                        new_metric.value, diff, low, high, p, prob, verdict, beyond, note))
    return rows


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    warnings: list[str]
    coverage: Coverage

    @property
    def beyond_margin(self) -> list[Row]:
        return [r for r in self.rows if r.beyond_margin]

    @property
    def failed(self) -> bool:
        """The gate's verdict: exit 1."""
        return bool(self.beyond_margin) or self.coverage.failed


def compare_sides(base: Loaded, new: Loaded, margin: float = 0.0, force: bool = False,
                  explainers: tuple[str, str] | None = None, metric: str | None = None,
                  n_resamples: int = 2000) -> Outcome:
    """Rows for every pair, warnings (ground truth differs and --force was given) and coverage."""
    if not base.ok:
        raise CompareError(no_results_message(base.path, f"{base.path}: holds no ok result"))
    if not (new.ok or new.not_ok or new.invalid):
        raise CompareError(no_results_message(new.path, f"{new.path}: holds no result"))
    matched, coverage = match(base, new, explainers)
    if not matched and not (coverage.errored or coverage.invalid):
        raise CompareError("BASE and NEW share no (task, explainer) job; name two explainers with --explainers A,B")
    rows, warnings = [], []
    for b, n in matched:
        diff = differing_ground_truth(b, n)
        if diff:
            where = display_text(f"{b.task}: {b.explainer} (BASE) vs {n.explainer} (NEW)")
            if not force:
                raise NotComparable(f"{where} were scored against different ground truth: " + "; ".join(diff[:6])
                                    + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else "")
                                    + "; re-run both with the same task versions and data, or pass --force")
            warnings.append(f"warning: {where}: compared despite different ground truth (--force): "
                            + "; ".join(diff[:3]))
        rows.extend(compare_pair(b, n, margin, force, n_resamples, metric=metric))
    return Outcome(rows, warnings, coverage)


def compare_runs(base: Sequence[JobResult], new: Sequence[JobResult], margin: float = 0.0, force: bool = False,
                 explainers: tuple[str, str] | None = None, metric: str | None = None) -> tuple[list[Row], list[str]]:
    """Rows for every pair of ok results, and warnings (ground truth differs and --force was given)."""
    single = len(base) == 1 and len(new) == 1
    out = compare_sides(Loaded(Path("BASE"), list(base), single_file=single),
                        Loaded(Path("NEW"), list(new), single_file=single), margin, force, explainers, metric)
    return out.rows, out.warnings


def markdown(rows: Sequence[Row], margin: float, coverage: Coverage | None = None) -> str:
    from tabulate import tabulate

    def f(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:+.3f}"

    def name(x: str) -> str:  # a name from a result file: shown as it is, nothing hidden or injected
        return display_text(x, markdown=True)

    two = sorted({(r.base, r.new) for r in rows if r.two_explainers})
    one_pair = len(two) == 1 and all(r.two_explainers for r in rows)
    a, b = (name(two[0][0]), name(two[0][1])) if one_pair else ("BASE", "NEW")

    def flag(r: Row) -> str:
        if not r.beyond_margin:
            return ""
        return f" ({name(r.new)} worse beyond the margin)" if r.two_explainers else " (REGRESSION)"

    table = [[name(r.task), name(r.base) if not r.two_explainers else f"{name(r.base)} vs {name(r.new)}",
              ("**" + name(r.metric) + "**") if r.headline else name(r.metric), "higher" if r.higher_is_better else "lower",
              "n/a" if not math.isfinite(r.base_value) else f"{r.base_value:.3f}",
              "n/a" if not math.isfinite(r.new_value) else f"{r.new_value:.3f}",
              f(r.difference), f"[{f(r.low)}, {f(r.high)}]",
              "n/a" if not math.isfinite(r.p_value) else f"{r.p_value:.3g}",
              "n/a" if not math.isfinite(r.prob_higher) else f"{r.prob_higher:.2f}",
              name(r.verdict) + flag(r)] for r in rows]
    headers = ["task", "explainer", "metric", "better", a, b, f"{b} - {a}", "95% CI", "p", f"P({b} > {a})", "verdict"]
    head = f"{a} vs {b} (two explainers)\n\n" if one_pair else ""
    text = head + (tabulate(table, headers=headers, tablefmt="github", disable_numparse=True) if rows else
                   "no job was compared")
    failed = [r for r in rows if r.beyond_margin]
    same = [r for r in failed if not r.two_explainers]
    other = [r for r in failed if r.two_explainers]
    tail = []
    if same:
        tail.append(f"REGRESSION: {len(same)} headline metric(s) worse by more than the margin {margin:g}: "
                    + ", ".join(f"{name(r.task)}/{name(r.new)} {name(r.metric)}" for r in same))
    if other:
        tail.append(f"{len(other)} headline metric(s) of the NEW explainer worse than the BASE explainer's by more "
                    f"than the margin {margin:g}: "
                    + ", ".join(f"{name(r.task)} {name(r.metric)}: {name(r.new)} vs {name(r.base)}" for r in other))
    if not failed:
        tail.append(f"no headline metric of the NEW explainer is worse than the BASE explainer's by more than the "
                    f"margin {margin:g}" if rows and all(r.two_explainers for r in rows) else
                    f"no headline metric is worse by more than the margin {margin:g}")
    if coverage is not None:
        tail.append(coverage.line())
        if coverage.failed:
            tail.append("FAILED: some BASE jobs were not compared (" + _reasons(coverage) + ")")
    return text + "\n\n" + "\n".join(tail)


def _reasons(coverage: Coverage) -> str:
    out = []
    for label, xs in (("task(s) not in NEW", coverage.tasks_missing), ("missing", coverage.missing),
                      ("errored", coverage.errored), ("invalid", coverage.invalid)):
        if xs:
            out.append(f"{len(xs)} {label}")
    return ", ".join(out)
