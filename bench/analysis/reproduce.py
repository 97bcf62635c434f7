"""`fexbench reproduce DIR`: run a published folder's configuration again and say what moved.

The folder's `run-config.json` is run unchanged except for where results go (a fresh folder) and,
if asked, the cache; every metric of every job is compared with the published value and interval,
and the rank groups of every task are recomputed and compared. The environment is compared too:
packages whose installed version differs from the folder's `environment.lock` are listed first,
because a different torch alone retrains different subject weights. Exit 0 when every metric is
within the tolerance and every rank group holds, 1 otherwise.
"""
from __future__ import annotations


import math
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from tabulate import tabulate

from fexbench.core.errors import UsageError
from fexbench.core.results import no_results_message, read_results_dir
from fexbench.analysis.comparisons import rank_all
from fexbench.harness.provenance import environment_differences, read_run_config


def _differs(a: float, b: float, tolerance: float) -> bool:
    if not (math.isfinite(a) or math.isfinite(b)):
        return False  # both undefined
    return not (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance)


def design_config(record: Mapping[str, Any], source: str, run: Mapping[str, Any] | None = None,
                  explainers: Sequence[str] | None = None) -> Any:
    """A results folder's recorded design (its run-config.json, read by
    fexbench.harness.provenance.read_run_config) as a validated RunConfig, with `run` keys replaced
    (a None value removes the key: the default applies). `explainers` keeps only those explainers'
    option tables (the others need not be installed here). Shared by `fexbench reproduce` and
    `fexbench verify`."""
    from fexbench.harness.config import validate

    section = dict(record.get("run", {}))
    section.pop("prefetch", None)  # an execution setting of older runs (now [run] executor): no number depends on it
    section.update(run or {})
    data = {k: v for k, v in record.items() if k in ("tasks", "explainers", "resources")}
    if explainers is not None:
        data["explainers"] = {k: v for k, v in (data.get("explainers") or {}).items() if k in explainers}
    data["run"] = {k: v for k, v in section.items() if v is not None}
    return validate(data, source)


def run_design(config: Any, log: Any = print) -> list:
    """Run a validated RunConfig's design as `fexbench run` would (threads, progress bars, executor)
    and return its results; nothing is resumed unless the config says so."""
    from fexbench.harness.driver import run
    from fexbench.harness.executors import apply_threads, make_executor

    env, _ = apply_threads(config.environment(), "[run] threads")
    if not config.run.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # shard save/load bars of the captioner, as in `fexbench run --quiet`
    return run(config.task_names(), config.explainer_names(), env, task_configs=config.task_configs(),
               explainer_configs=config.explainer_configs(), resume=config.run.resume, log=log,
               executor=make_executor(config.run.executor))


def reproduce(folder: str | Path, out: str | Path | None = None, cache_dir: str | Path | None = None,
              tolerance: float = 1e-6, log: Any = print) -> tuple[bool, str]:
    folder = Path(folder)
    try:
        record = read_run_config(folder)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(no_results_message(folder, str(exc))) from None
    published, problems = read_results_dir(folder)
    if not published:
        raise UsageError(no_results_message(folder, f"{folder}: no readable results to compare with"))
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="fexbench-reproduce-"))
    run = {"out": str(out), "resume": False}
    if cache_dir is not None:
        run["cache_dir"] = str(cache_dir)
    config = design_config(record, f"{folder}/run-config.json", run)
    lines = []
    env_diff = environment_differences(folder)
    if env_diff:
        lines.append("environment differs from the folder's lock file (numbers may move for this reason alone):")
        lines += [f"  {d}" for d in env_diff[:30]] + ([f"  ... and {len(env_diff) - 30} more"] if len(env_diff) > 30 else [])
    else:
        lines.append("environment: identical to the folder's lock file")
    fresh = run_design(config, log)
    old = {(r.task, r.explainer): r for r in published}
    rows, ok = [], True
    for r in sorted(fresh, key=lambda r: (r.task, r.explainer)):
        before = old.get((r.task, r.explainer))
        if before is None:
            rows.append([r.task, r.explainer, "-", "not in the published folder", "", ""])
            continue
        if r.status != before.status:
            ok = False
            rows.append([r.task, r.explainer, "-", f"status {before.status} -> {r.status}", "", "DIFFERS"])
            continue
        for m in r.metrics:
            try:
                p = before.metric(m.name)
            except KeyError:
                rows.append([r.task, r.explainer, m.name, "not published", "", ""])
                continue
            diff = max(abs(m.value - p.value) if math.isfinite(m.value) and math.isfinite(p.value) else 0.0,
                       abs(m.ci_low - p.ci_low) if math.isfinite(m.ci_low) and math.isfinite(p.ci_low) else 0.0,
                       abs(m.ci_high - p.ci_high) if math.isfinite(m.ci_high) and math.isfinite(p.ci_high) else 0.0)
            bad = any(_differs(x, y, tolerance) for x, y in
                      ((m.value, p.value), (m.ci_low, p.ci_low), (m.ci_high, p.ci_high)))
            ok &= not bad
            rows.append([r.task, r.explainer, m.name, f"{p.value:.4f} -> {m.value:.4f}", f"{diff:.2e}",
                         "DIFFERS" if bad else "same"])
    lines.append(tabulate(rows, headers=["task", "explainer", "metric", "published -> now", "max |diff|",
                                         f"within {tolerance:g}"], tablefmt="simple", disable_numparse=True))
    before_ranks, now_ranks = rank_all(published), rank_all(fresh)
    for task in sorted(set(before_ranks) | set(now_ranks)):
        a = dict(before_ranks[task].ranks) if task in before_ranks else {}
        b = dict(now_ranks[task].ranks) if task in now_ranks else {}
        holds = a == b
        ok &= holds
        lines.append(f"rank groups of {task}: {'hold' if holds else 'CHANGED'}"
                     + ("" if holds else f" (published {sorted(a.items())}, now {sorted(b.items())})"))
    for problem in problems:
        lines.append(f"skipped published file: {problem}")
    lines.append(f"reproduced results: {out}")
    lines.append("REPRODUCED" if ok else "NOT REPRODUCED")
    return ok, "\n".join(lines)
