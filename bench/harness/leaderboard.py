"""Leaderboard tables from job results: one block per task, sorted by the task's first metric.

Sorting and formatting read only the metrics' own metadata (higher_is_better, range), so a new
metric or task needs no code here. Oracle rows are marked; error rows keep their message.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from tabulate import tabulate

from fexbench.core.results import JobResult


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


def _sort_key(result: JobResult) -> tuple:
    if result.status != "ok" or not result.metrics:
        return (1, 0.0, result.explainer)
    first = result.metrics[0]
    value = first.value if math.isfinite(first.value) else -math.inf
    return (0, -value if first.higher_is_better else value, result.explainer)


def tables(results: Iterable[JobResult], fmt: str = "simple") -> dict[str, str]:
    """task name -> rendered table (tabulate format `fmt`: 'simple' for a terminal, 'github' for Markdown)."""
    by_task: dict[str, list[JobResult]] = defaultdict(list)
    for r in results:
        by_task[r.task].append(r)
    out = {}
    for task, rows in by_task.items():
        rows = sorted(rows, key=_sort_key)
        metric_names: list[str] = []
        arrows: dict[str, str] = {}
        for r in rows:
            for m in r.metrics:
                if m.name not in arrows:
                    metric_names.append(m.name)
                    arrows[m.name] = "↑" if m.higher_is_better else "↓"
        headers = ["explainer", *[f"{n} {arrows[n]}" for n in metric_names], "seeds", "time s", "peak MB", "status"]
        body = []
        for r in rows:
            values = {m.name: _fmt(m.value, m.ci_low, m.ci_high) for m in r.metrics}
            name = f"{r.explainer} (oracle)" if r.oracle else r.explainer
            status = "ok" if r.status == "ok" else "error: " + (r.error or "").splitlines()[0][:80]
            body.append([name, *[values.get(n, "") for n in metric_names], _seeds(r),
                         f"{r.fit_time_s + r.explain_time_s:.2f}", f"{r.peak_rss_mb:.0f}", status])
        out[task] = tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)
    return out


def overview(results: Iterable[JobResult], fmt: str = "simple") -> str:
    """One row per explainer, one column per task: that task's headline (first) metric."""
    results = [r for r in results]
    tasks = list(dict.fromkeys(r.task for r in results))
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    oracle: dict[str, bool] = {}
    headers = ["explainer"]
    for task in tasks:
        rows = [r for r in results if r.task == task]
        head = next((r.metrics[0] for r in rows if r.status == "ok" and r.metrics), None)
        headers.append(f"{task}: {head.name} {'↑' if head.higher_is_better else '↓'}" if head else task)
        for r in rows:
            oracle[r.explainer] = r.oracle
            cells[r.explainer][task] = (_fmt(r.metrics[0].value, r.metrics[0].ci_low, r.metrics[0].ci_high)
                                        if r.status == "ok" and r.metrics else "error")
    order = sorted(cells, key=lambda e: (not oracle[e], e))
    body = [[f"{e} (oracle)" if oracle[e] else e, *[cells[e].get(t, "") for t in tasks]] for e in order]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def markdown(results: Iterable[JobResult], title: str = "fexbench leaderboard") -> str:
    results = list(results)
    parts = [f"# {title}", "",
             "Values are point estimates with bootstrap 95% CIs; ↑ higher is better, ↓ lower is better. "
             "Oracle rows read ground truth and mark the ceiling. A stochastic explainer's row is the mean over "
             "its explainer seeds (`seeds`: how many, and the spread of the first metric over them).", ""]
    parts += ["## Overview (each task's headline metric)", "", overview(results, fmt="github"), ""]
    for task, table in tables(results, fmt="github").items():
        parts += [f"## {task}", "", table, ""]
    return "\n".join(parts)
