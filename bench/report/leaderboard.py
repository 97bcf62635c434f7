"""Leaderboard tables from job results: one block per task, in rank groups of its headline metric.

A sorted list implies an order; the data may not support it. Rows are therefore grouped by rank
(fexbench.analysis.comparisons: paired tests over the same units and replicates, Holm-corrected):
an explainer's rank is one plus the number of explainers significantly better than it, so methods
the data cannot separate share a rank, shown as a tie ("2=" for a shared second place). Within a
group rows are in alphabetical order, not by value. Sorting and formatting read only the metrics'
own metadata (higher_is_better, range), so a new metric or task needs no code here. Oracle rows
are marked; error rows keep their message.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from tabulate import tabulate

from fexbench.core.results import JobResult
from fexbench.core.text import display_text
from fexbench.analysis.comparisons import TaskRanking, rank_all, role


def clean(text: object, markdown: bool = False) -> str:
    """A string from a result file made safe to print (fexbench.core.text.display_text): ANSI
    escapes, bidirectional controls and zero-width characters removed, other control characters
    (newlines) turned into spaces; for Markdown also HTML special characters and table pipes
    escaped, so a crafted explainer name or error message cannot inject markup into summary.md or
    a rendered page, nor reorder or hide what a reader sees."""
    return display_text(text, markdown)


def _fmt(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    ci = f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{value:.2f}{ci}"


def _seeds(result: JobResult) -> str:
    """How many explainer seeds a row pools, with the spread of its headline metric over them."""
    n = len(result.explainer_seeds)
    values = [v for v in (result.metrics[0].seed_values if result.metrics else ()) if math.isfinite(v)]
    if n > 1 and len(values) > 1:
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return f"{n} (sd {sd:.2f})"
    return str(n)


def _role(explainer: str, ranking: TaskRanking | None) -> str:
    """From the registered code (fexbench.analysis.comparisons.role), never from the result file."""
    return ranking.roles[explainer] if ranking is not None and explainer in ranking.roles else role(explainer)


def _rank_label(explainer: str, ranking: TaskRanking | None) -> str:
    """A compared method's rank interval among the methods ("[1, 3]"); "-" for a control or an
    oracle (no rank among methods) or an explainer that could not be ranked."""
    if ranking is None or explainer not in ranking.rank_intervals:
        return "-"
    return ranking.rank_label(explainer)


def _beats_label(explainer: str, ranking: TaskRanking | None) -> str:
    """The controls a compared method significantly beats (family 2), e.g. "random, class-name"."""
    if ranking is None or explainer not in ranking.beats:
        return ""
    won = [c for c, yes in sorted(ranking.beats[explainer].items()) if yes]
    return ", ".join(won) if won else "none"


def _display_name(explainer: str, ranking: TaskRanking | None) -> str:
    kind = _role(explainer, ranking)
    return f"{explainer} ({kind})" if kind != "method" else explainer


def _sort_key(result: JobResult, ranking: TaskRanking | None = None) -> tuple:
    """The oracle (the ceiling) first, then compared methods by rank interval, then controls."""
    if result.status != "ok" or not result.metrics:
        return (4, 0, 0, 0.0, result.explainer)
    kind = _role(result.explainer, ranking)
    if kind == "oracle":
        return (0, 0, 0, 0.0, result.explainer)
    if ranking is not None and result.explainer in ranking.rank_intervals:
        lo, hi = ranking.rank_intervals[result.explainer]
        return (1, lo, hi, 0.0, result.explainer)
    first = result.metrics[0]
    value = first.value if math.isfinite(first.value) else -math.inf
    hib = ranking.higher_is_better if ranking is not None else first.higher_is_better
    return (3 if kind == "control" else 2, 0, 0, -value if hib else value, result.explainer)


def _replicates(result: JobResult) -> str:
    return str(max(1, len(result.replicates)))


def tables(results: Iterable[JobResult], fmt: str = "simple",
           rankings: dict[str, TaskRanking] | None = None) -> dict[str, str]:
    """task name -> rendered table (tabulate format `fmt`: 'simple' for a terminal, 'github' for Markdown)."""
    results = list(results)
    rankings = rank_all(results) if rankings is None else rankings
    by_task: dict[str, list[JobResult]] = defaultdict(list)
    for r in results:
        by_task[r.task].append(r)
    out = {}
    for task, rows in by_task.items():
        ranking = rankings.get(task)
        rows = sorted(rows, key=lambda r: _sort_key(r, ranking))
        metric_names: list[str] = []
        arrows: dict[str, str] = {}
        for r in rows:
            for m in r.metrics:
                if m.name not in arrows:
                    metric_names.append(m.name)
                    arrows[m.name] = "↑" if m.higher_is_better else "↓"
        md = fmt != "simple"
        headers = ["rank", "explainer", "beats", *[clean(f"{n} {arrows[n]}", md) for n in metric_names], "replicates",
                   "seeds", "time s", "process peak MB", "status"]
        body = []
        for r in rows:
            values = {m.name: _fmt(m.value, m.ci_low, m.ci_high) for m in r.metrics}
            name = clean(_display_name(r.explainer, ranking), md)
            status = "ok" if r.status == "ok" else f"{r.status}: " + clean(((r.error or "").splitlines() or [""])[0][:80], md)
            body.append([_rank_label(r.explainer, ranking), name, clean(_beats_label(r.explainer, ranking), md),
                         *[values.get(n, "") for n in metric_names],
                         _replicates(r), _seeds(r),
                         f"{r.fit_time_s + r.explain_time_s:.2f}", f"{r.peak_rss_mb:.0f}", status])
        out[task] = tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)
    return out


def overview(results: Iterable[JobResult], fmt: str = "simple",
             rankings: dict[str, TaskRanking] | None = None) -> str:
    """One row per explainer, one column per task: that task's headline (first) metric, with the
    explainer's rank group on it in parentheses."""
    results = [r for r in results]
    rankings = rank_all(results) if rankings is None else rankings
    tasks = list(dict.fromkeys(r.task for r in results))
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    kinds: dict[str, str] = {}
    headers = ["explainer"]
    for task in tasks:
        rows = [r for r in results if r.task == task]
        ranking = rankings.get(task)
        head = next((r.metrics[0] for r in rows if r.status == "ok" and r.metrics), None)
        arrow = ("↑" if ranking.higher_is_better else "↓") if ranking else ("↑" if head and head.higher_is_better else "↓")
        headers.append(clean(f"{task}: {head.name} {arrow}" if head else task, fmt != "simple"))
        for r in rows:
            kinds[r.explainer] = _role(r.explainer, ranking)
            rank = _rank_label(r.explainer, ranking)
            beats = _beats_label(r.explainer, ranking)
            notes = "; ".join(x for x in ((f"rank {rank}" if rank != "-" else ""),
                                          (f"beats {beats}" if beats and beats != "none" else "")) if x)
            cells[r.explainer][task] = (_fmt(r.metrics[0].value, r.metrics[0].ci_low, r.metrics[0].ci_high)
                                        + (f" ({notes})" if notes else "")
                                        if r.status == "ok" and r.metrics else r.status)
    order = sorted(cells, key=lambda e: ({"oracle": 0, "method": 1, "control": 2}[kinds[e]], e))
    md = fmt != "simple"
    body = [[clean(f"{e} ({kinds[e]})" if kinds[e] != "method" else e, md), *[cells[e].get(t, "") for t in tasks]]
            for e in order]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def oracle_gaps(ranking: TaskRanking) -> str | None:
    """One line: the oracle's gap to every other explainer (family 3), with its interval."""
    if not ranking.oracle_gaps:
        return None
    parts = []
    for name, gap in sorted(ranking.oracle_gaps.items(), key=lambda kv: -kv[1].difference):
        mark = " (significant)" if gap.significant else ""
        parts.append(f"{name} {gap.difference:+.2f} [{gap.low:+.2f}, {gap.high:+.2f}]{mark}")
    oracle = next(iter(ranking.oracle_gaps.values())).oracle
    return f"How far {oracle} (the ceiling) is above each explainer: " + "; ".join(parts) + "."


def _design_note(task_results: list[JobResult]) -> str | None:
    """The task's "what this design resolves" paragraph (fexbench.analysis.power), or None."""
    from fexbench.analysis.power import design_note  # imports scipy: only when a summary is written

    return design_note(task_results)


def markdown(results: Iterable[JobResult], title: str = "fexbench leaderboard", notes: Iterable[str] = ()) -> str:
    results = list(results)
    rankings = rank_all(results)
    replicates = max((len(r.replicates) for r in results), default=0) or 1
    parts = [f"# {title}", "",
             "Values are point estimates with 95% CIs; ↑ higher is better, ↓ lower is better. "
             + (f"Each value is the mean over {replicates} independent replicates (own world data, zoo and "
                "explainer seeds) and its CI states the uncertainty of the benchmark (Student t over replicates). "
                if replicates > 1 else
                "With one replicate a CI is the bootstrap over the units of that one zoo: it leaves out the "
                "variation between zoos. ")
             + "**rank** is a compared method's rank interval among the compared methods on the task's "
             "headline (first) metric: [1 + methods significantly better, M - methods significantly worse] "
             "(paired tests over the same units and replicates, Holm within the compared methods, 5%). A wide "
             "interval means the data cannot place the method more precisely, not that it ties for first. "
             "**beats** names the controls (random words, class names) the method beats (one-sided paired "
             "tests, Holm over every method-control pair); controls and the oracle get no rank, and the "
             "oracle's gap to each explainer is given with its interval. Roles, directions and headlines come "
             "from the registered code, not from the files. A "
             "stochastic explainer's row is the mean over its explainer seeds (`seeds`: how many, and the "
             "spread of the first metric over them).", ""]
    parts += [str(n) for n in notes]
    parts += ["## Overview (each task's headline metric; rank interval and controls beaten in parentheses)", "",
              overview(results, fmt="github", rankings=rankings), ""]
    for task, table in tables(results, fmt="github", rankings=rankings).items():
        parts += [f"## {clean(task, True)}", "", table, ""]
        ranking = rankings.get(task)
        if ranking is not None and oracle_gaps(ranking):
            parts += [clean(oracle_gaps(ranking), True), ""]
        note = _design_note([r for r in results if r.task == task])
        if note:
            parts += [clean(note, True), ""]
        if ranking is not None and ranking.excluded:
            parts += ["Not ranked: " + "; ".join(f"{clean(e, True)} ({clean(why, True)})"
                                                 for e, why in sorted(ranking.excluded.items())), ""]
    return "\n".join(parts)
