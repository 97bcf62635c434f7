"""`fexbench compare BASE NEW`: is a new version of an explainer better or worse than the old one?

A regression gate for an explainer's CI. BASE and NEW are result folders (or single result files)
of two runs of the same task versions against the same ground truth; every (task, explainer) job
present in both is compared on every metric, NEW - BASE, paired over the same units and
replicates (fexbench.analysis.comparisons.compare_results), with the interval, the p-value and
P(NEW > BASE). A row's verdict respects the metric's direction: "better" or "worse" when the
interval excludes zero, else "no detectable change".

Exit status: 1 when some job's headline metric (its task's first) is worse by more than the
margin with the whole interval beyond it (the CI lies entirely past -margin in the bad
direction), 0 otherwise, 2 for unusable input (the CLI's convention). A margin absorbs differences
too small to matter, so a stochastic explainer run twice with other seeds does not raise a false
alarm. Results scored against different ground truth are refused, naming the differing hashes,
unless --force (then compared with a warning).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fexbench.core.results import JobResult, ResultsError, read_result, read_results_dir
from fexbench.core.text import display_text
from fexbench.analysis.comparisons import NotComparable, compare_results, differing_ground_truth


class CompareError(FileNotFoundError):
    """Unusable input (no such folder, nothing in common): one line, exit 2."""


@dataclass(frozen=True)
class Row:
    task: str
    base: str  # explainer of BASE
    new: str  # explainer of NEW
    metric: str
    headline: bool
    higher_is_better: bool
    base_value: float
    new_value: float
    difference: float  # NEW - BASE
    low: float
    high: float
    p_value: float
    prob_improvement: float  # P(NEW > BASE)
    verdict: str  # better | worse | no detectable change | not comparable
    regression: bool  # headline metric worse beyond the margin
    note: str = ""


def load(path: str | Path) -> list[JobResult]:
    """A result folder (<task>/<explainer>.json) or one result file; only ok results count."""
    path = Path(path)
    if path.is_file():
        try:
            results = [read_result(path)]
        except ResultsError as exc:
            raise CompareError(str(exc)) from None
    elif path.is_dir():
        results, problems = read_results_dir(path)
        for problem in problems:
            print(f"compare: {display_text(problem)}", file=sys.stderr)
    else:
        raise CompareError(f"{path}: no such result folder or file")
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        raise CompareError(f"{path}: holds no ok result")
    return ok


def pairs(base: Sequence[JobResult], new: Sequence[JobResult],
          explainers: tuple[str, str] | None = None) -> list[tuple[JobResult, JobResult]]:
    """(BASE, NEW) pairs: the same task and explainer; two single files pair whatever their
    explainer; `explainers` (A, B) pairs A of BASE with B of NEW per task."""
    if explainers:
        a, b = explainers
        bases = {r.task: r for r in base if r.explainer == a}
        news = {r.task: r for r in new if r.explainer == b}
        missing = [n for n, found in ((a, bases), (b, news)) if not found]
        if missing:
            raise CompareError(f"no ok result of explainer {missing[0]!r} in the given results")
        return [(bases[t], news[t]) for t in sorted(set(bases) & set(news))]
    if len(base) == 1 and len(new) == 1:
        return [(base[0], new[0])]
    by_key = {(r.task, r.explainer): r for r in new}
    return [(r, by_key[(r.task, r.explainer)]) for r in sorted(base, key=lambda r: (r.task, r.explainer))
            if (r.task, r.explainer) in by_key]


def _verdict(diff: float, low: float, high: float, higher_is_better: bool) -> str:
    if not all(math.isfinite(x) for x in (diff, low, high)):
        return "not comparable"
    good_low, good_high = (low, high) if higher_is_better else (-high, -low)
    if good_low > 0:
        return "better"
    if good_high < 0:
        return "worse"
    return "no detectable change"


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
        except (NotComparable, ValueError) as exc:
            if isinstance(exc, NotComparable) and "ground truth" in str(exc):
                raise
            diff = low = high = p = prob = math.nan
            note = str(exc)
        verdict = _verdict(diff, low, high, hib)
        bad_edge = high if hib else -low  # the interval's edge nearest to "no change", in the good direction
        regression = i == 0 and math.isfinite(bad_edge) and bad_edge < -margin
        rows.append(Row(base.task, base.explainer, new.explainer, metric.name, i == 0, hib, metric.value,
                        new_metric.value, diff, low, high, p, prob, verdict, regression, note))
    return rows


def compare_runs(base: Sequence[JobResult], new: Sequence[JobResult], margin: float = 0.0, force: bool = False,
                 explainers: tuple[str, str] | None = None, metric: str | None = None) -> tuple[list[Row], list[str]]:
    """Rows for every pair, and warnings (ground truth differs and --force was given)."""
    matched = pairs(base, new, explainers)
    if not matched:
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
        rows.extend(compare_pair(b, n, margin, force, metric=metric))
    return rows, warnings


def markdown(rows: Sequence[Row], margin: float) -> str:
    from tabulate import tabulate

    def f(x: float) -> str:
        return "n/a" if not math.isfinite(x) else f"{x:+.3f}"

    def name(x: str) -> str:  # a name from a result file: shown as it is, nothing hidden or injected
        return display_text(x, markdown=True)

    table = [[name(r.task), name(r.base) if r.base == r.new else f"{name(r.base)} -> {name(r.new)}",
              ("**" + name(r.metric) + "**") if r.headline else name(r.metric), "higher" if r.higher_is_better else "lower",
              "n/a" if not math.isfinite(r.base_value) else f"{r.base_value:.3f}",
              "n/a" if not math.isfinite(r.new_value) else f"{r.new_value:.3f}",
              f(r.difference), f"[{f(r.low)}, {f(r.high)}]",
              "n/a" if not math.isfinite(r.p_value) else f"{r.p_value:.3g}",
              "n/a" if not math.isfinite(r.prob_improvement) else f"{r.prob_improvement:.2f}",
              r.verdict + (" (REGRESSION)" if r.regression else "")] for r in rows]
    headers = ["task", "explainer", "metric", "better", "BASE", "NEW", "NEW - BASE", "95% CI", "p",
               "P(NEW > BASE)", "verdict"]
    text = tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    failed = [r for r in rows if r.regression]
    tail = (f"\n\nREGRESSION: {len(failed)} headline metric(s) worse by more than the margin {margin:g}: "
            + ", ".join(f"{name(r.task)}/{name(r.new)} {name(r.metric)}" for r in failed)) if failed else \
        f"\n\nno headline metric is worse by more than the margin {margin:g}"
    return text + tail
