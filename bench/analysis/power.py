"""`fexbench power`: how small a difference between two explainers a design can detect.

From a pilot run with two or more replicates, for every task's headline metric and every pair of
compared methods (explainers that are neither oracles nor controls), the paired difference's
variance components are measured (fexbench.core.stats.pilot_components: between replicates,
across explainer seeds, per unit) and turned into the minimum detectable difference (MDD) at 80%
power and a two-sided 5% level, in closed form (noncentral t) and by simulation from the measured
components. A design is a number of replicates R (each its own world data and zoo) and explainer
seeds S; its cost comes from the pilot's own timing (`timing.json`: preparation and job time per
replicate). The command prints, per task, the components, the MDD of the pilot's design and of
the configured one, and the cheapest design whose worst-pair MDD is at most the target; then the
projected chance that a re-run gives the same rank groups (fexbench.analysis.stability) at each
candidate number of replicates, and the first that reaches the stability target.
`design_note` is the one-paragraph version of both that summary.md and the site show per task.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tabulate import tabulate

from fexbench.core import stats
from fexbench.analysis import stability
from fexbench.core.errors import UsageError
from fexbench.core.results import JobResult, no_results_message, read_results_dir
from fexbench.analysis import comparisons
from fexbench.analysis.comparisons import NotComparable, differing_ground_truth, replicated

TIMING = "timing.json"
# designs tried for rank stability; not 2: with a t quantile of 12.7 almost nothing is separated, so
# groups are stable and uninformative
STABILITY_CANDIDATES = (3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 40)


def _is_method(result: JobResult) -> bool:
    """A compared method: neither an oracle (a ceiling) nor a control (random words, class names),
    by the registered code's role (fexbench.analysis.comparisons.role), never the file's."""
    return comparisons.role(result.explainer) == "method"


def rule_alpha(pairs: int, alpha: float = 0.05) -> float:
    """The level a single pair must reach under the board's rule: Holm over the task's pairs of
    compared methods, whose hardest step (the first) is alpha / pairs."""
    return alpha / max(1, pairs)


@dataclass(frozen=True)
class PairPower:
    task: str
    metric: str
    a: str
    b: str
    components: stats.Components
    mdd_pilot: float
    mdd_pilot_simulated: float


def pair_powers(results: Sequence[JobResult], n_sim: int = 4000) -> list[PairPower]:
    """Per task, every pair of compared methods on the headline metric: the paired difference's
    variance components and its MDD at the pilot's replicates, in closed form and (n_sim > 0)
    checked by simulation (NaN with n_sim = 0)."""
    by_task: dict[str, list[JobResult]] = {}
    for r in results:
        if r.status == "ok" and r.metrics and _is_method(r):
            by_task.setdefault(r.task, []).append(r)
    out = []
    for task, rows in sorted(by_task.items()):
        metric = rows[0].metrics[0].name
        rows = sorted(rows, key=lambda r: r.explainer)
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                if differing_ground_truth(a, b):
                    continue
                try:
                    ra, rb = replicated(a, metric), replicated(b, metric)
                except NotComparable:
                    continue
                if len(ra.units) < 2:
                    continue
                try:
                    comp = stats.pilot_components(ra, rb, seed=a.seed)
                except ValueError:
                    continue
                r = comp.replicates
                out.append(PairPower(task, metric, a.explainer, b.explainer, comp,
                                     stats.minimum_detectable_difference(comp, r),
                                     stats.simulate_mdd(comp, r, n_sim=n_sim, seed=a.seed) if n_sim else math.nan))
    return out


def _seconds_per_replicate(folder: Path, task: str, replicates: int) -> float | None:
    """The pilot's cost of one replicate of `task`: its preparation plus every job, per replicate."""
    return step_seconds_per_replicate(_timing(folder), task)


def _methods_only(values: comparisons.TaskValues) -> comparisons.TaskValues:
    """The compared methods of a task's values: the board ranks only them (one family)."""
    kept = {n: v for n, v in values.values.items() if comparisons.role(n) == "method"}
    return dataclasses.replace(values, values=kept)


def _stability_model(values: comparisons.TaskValues) -> stability.JointModel | None:
    """The task's joint model for the stability projection, or None: fewer than two rankable
    methods, a method undefined in some replicate, or a single replicate."""
    if len(values.values) < 2:
        return None
    try:
        model = stability.joint_model(values.values, seed=values.seed)
    except ValueError:
        return None
    return model if model.replicates >= 2 else None


def stability_summary(values: comparisons.TaskValues, pilot_r: int, design_r: int, target: float, n_sim: int,
                      max_replicates: int) -> dict[str, Any] | None:
    """The projected rank-group stability of one task (fexbench.analysis.stability) at the pilot's
    design, the configured one and every candidate design up to `max_replicates`, and the first
    candidate whose P(near) reaches `target`."""
    model = _stability_model(_methods_only(values))
    if model is None:
        return None
    designs = sorted({r for r in STABILITY_CANDIDATES if r <= max_replicates} | {max(3, pilot_r), max(3, design_r)})
    curve = stability.stability_curve(model, designs, values.higher_is_better, n_sim=n_sim, seed=values.seed)
    reached = stability.first_stable(curve, target)
    as_dict = lambda s: {"replicates": s.replicates, "same": s.same, "near": s.near, "separated": s.separated}
    return {"explainers": list(model.names), "pairs": curve[0].pairs, "target": target, "n_sim": n_sim,
            "pilot_replicates": pilot_r, "design_replicates": design_r,
            "curve": [as_dict(s) for s in curve], "reached": as_dict(reached) if reached else None}


POOL_KEYS = ("task", "explainer", "code_versions", "replicates")  # must agree for runs to pool as one pilot


def pool_runs(per_run: Sequence[Sequence[JobResult]], folders: Sequence[str | Path]) -> list[JobResult]:
    """Several runs of one design (different run seeds) as one pilot: per (task, explainer), the
    results' replicates and per-unit values concatenated, replicates re-indexed. Runs must agree on
    the task and explainer options, code versions and replicates per run (UsageError naming the
    field), and must not share ground truth (the same run twice would fake agreement)."""
    groups: dict[tuple[str, str], list[tuple[int, JobResult]]] = {}
    for k, results in enumerate(per_run):
        for r in results:
            if r.status == "ok" and r.unit_values:
                groups.setdefault((r.task, r.explainer), []).append((k, r))
    pooled = []
    for (task, explainer), rows in sorted(groups.items()):
        if len(rows) < len(per_run):
            continue  # not in every run: left out
        first = rows[0][1]
        for k, r in rows[1:]:
            for key in POOL_KEYS:
                if r.config.get(key) != first.config.get(key):
                    raise UsageError(f"{task}/{explainer}: config.{key} differs between {folders[0]} and {folders[k]}: "
                                     "runs pool only when they share the design (only the run seed may differ)")
            if comparisons.ground_truth_identity(r) == comparisons.ground_truth_identity(first):
                raise UsageError(f"{task}/{explainer}: {folders[0]} and {folders[k]} share ground truth (the same "
                                 "data and weights): pool independent runs, e.g. other --seed")
        reps = [rep for _, r in rows for rep in (r.replicates or ({"index": 0, "hashes": r.hashes},))]
        reps = tuple({**rep, "index": i} for i, rep in enumerate(reps))
        values = {}
        for metric in first.unit_values:
            entries = [r.unit_values.get(metric) for _, r in rows]
            if any(e is None for e in entries):
                continue
            merged = {**entries[0], "replicates": [x for e in entries for x in e["replicates"]]}
            if any("clusters" in e for e in entries):
                merged["clusters"] = [c for e in entries for c in (e.get("clusters") or [None] * len(e["replicates"]))]
            values[metric] = merged
        pooled.append(dataclasses.replace(first, replicates=reps, unit_values=values))
    return pooled


def report(folder: str | Path | Sequence[str | Path], target: float = 0.10, replicates: int | None = None,
           max_replicates: int = 40, n_sim: int = 4000, stability_target: float = 0.8,
           stability_sims: int = 500) -> tuple[str, dict[str, Any]]:
    folders = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
    per_run, problems = [], []
    for f in folders:
        found, trouble = read_results_dir(f)
        if not found:
            raise UsageError(no_results_message(
                f, f"{f}: no readable results; run a pilot first: fexbench run --replicates 3 --out {f}"))
        per_run.append(found)
        problems += trouble
    results = per_run[0] if len(folders) == 1 else pool_runs(per_run, folders)
    folder = folders[0]  # timing.json: the first run's cost per replicate
    by_task: dict[str, list[JobResult]] = {}
    for r in results:
        by_task.setdefault(r.task, []).append(r)
    pairs = pair_powers(results, n_sim=n_sim)
    tasks = sorted(t for t, rows in by_task.items() if any(len(r.replicates or ()) >= 2 for r in rows))
    if not tasks:
        raise UsageError(f"{folder}: no task with two or more replicates and unit values; "
                         "run a pilot with --replicates 2 or more (schema-3 results)")
    lines, summary = [], {}
    for task in tasks:
        rows = [p for p in pairs if p.task == task]
        ranked = comparisons.task_values(by_task[task])
        entry: dict[str, Any] = {}
        if rows:
            pilot_r = rows[0].components.replicates
            entry, text = _pair_section(folder, task, rows, replicates or pilot_r, target, max_replicates)
            lines.extend(text)
        else:
            pilot_r = max(len(r.replicates or ()) for r in by_task[task])
            lines.append(f"== {task}: (pilot: {pilot_r} replicates; no pair of compared methods: "
                         "oracles and controls only) ==")
        design_r = replicates or pilot_r
        stab = stability_summary(ranked, pilot_r, design_r, stability_target, stability_sims, max_replicates) \
            if ranked else None
        if stab is not None:
            lines.extend(_stability_lines(stab, _seconds_per_replicate(folder, task, pilot_r)))
            entry = {**entry, "rank_stability": stab}
        lines.append("")
        summary[task] = {"metric": ranked.metric if ranked else None, "pilot_replicates": pilot_r, **entry}
    for problem in problems:
        lines.append(f"skipped: {problem}")
    return "\n".join(lines), summary


def _pair_section(folder: Path, task: str, rows: Sequence[PairPower], design_r: int, target: float,
                  max_replicates: int) -> tuple[dict[str, Any], list[str]]:
    """The variance components and MDD table of one task's pairs of compared methods."""
    pilot_r = rows[0].components.replicates
    level = rule_alpha(len(rows))
    rule_mdd = lambda p, r: stats.minimum_detectable_difference(p.components, r, alpha=level)
    lines, table = [], []
    for p in rows:
        c = p.components
        table.append([f"{p.a} - {p.b}", f"{c.replicate:.4f}", f"{c.seed:.4f}" if c.seed_estimated else "(in replicate)",
                      f"{c.unit:.4f} / n={c.units}", f"{math.sqrt(c.observed):.3f}" if math.isfinite(c.observed) else "n/a",
                      _mdd(p.mdd_pilot), _mdd(p.mdd_pilot_simulated),
                      _mdd(stats.minimum_detectable_difference(c, design_r)), _mdd(rule_mdd(p, design_r))])
    worst = max(rows, key=lambda p: rule_mdd(p, design_r))
    per_rep = _seconds_per_replicate(folder, task, pilot_r)
    needed = next((r for r in range(2, max_replicates + 1) if rule_mdd(worst, r) <= target), None)
    lines.append(f"== {task}: {rows[0].metric} (pilot: {pilot_r} replicates, {worst.components.units} units each) ==")
    lines.append(tabulate(table, headers=["pair (a - b)", "var replicate", "var seed", "var unit (per unit)",
                                          "sd of replicate diff", f"MDD at R={pilot_r}", "MDD simulated",
                                          f"MDD at R={design_r}", f"board-rule MDD at R={design_r}"],
                          tablefmt="simple", disable_numparse=True))
    lines.append(f"MDD: one uncorrected two-sided 5% paired t-test; board-rule MDD: at {level:.3g}, the first step of "
                 f"Holm over the {len(rows)} pairs of compared methods, what separating a pair on the board takes")
    cost = f"; about {needed * per_rep:.0f} s of this task's compute at the pilot's cost per replicate " \
           f"({per_rep:.0f} s)" if needed and per_rep else ""
    if needed:
        lines.append(f"worst pair {worst.a} - {worst.b}: board-rule MDD <= {target:g} needs {needed} replicates{cost}")
    else:
        lines.append(f"worst pair {worst.a} - {worst.b}: MDD <= {target:g} is out of reach with up to "
                     f"{max_replicates} replicates at this design (more units per replicate, or fewer methods' "
                     f"noise, would be needed)")
    entry = {"worst_pair": [worst.a, worst.b],
             "mdd_at_design": rule_mdd(worst, design_r),
             "mdd_uncorrected_at_design": max(stats.minimum_detectable_difference(p.components, design_r) for p in rows),
             "rule_alpha": level,
             "replicates_for_target": needed, "seconds_per_replicate": per_rep,
             "pairs": {f"{p.a} - {p.b}": {"replicate": p.components.replicate, "seed": p.components.seed,
                                          "unit": p.components.unit, "units": p.components.units,
                                          "mdd_pilot": p.mdd_pilot,
                                          "mdd_pilot_simulated": p.mdd_pilot_simulated}
                       for p in rows}}
    return entry, lines


def _stability_lines(stab: Mapping[str, Any], per_rep: float | None) -> list[str]:
    marks: dict[int, list[str]] = {}
    for label, r in (("pilot", stab["pilot_replicates"]), ("design", stab["design_replicates"])):
        marks.setdefault(r, []).append(label)
    lines = [f"rank groups of {len(stab['explainers'])} explainers: projected chance that a re-run gives the same "
             f"groups ({stab['n_sim']} simulated pairs of runs per design)"]
    table = [[f"{s['replicates']}" + (f" ({', '.join(marks[s['replicates']])})" if s["replicates"] in marks else ""), f"{s['same']:.2f}", f"{s['near']:.2f}",
              f"{s['separated']:.1f} of {stab['pairs']}"] for s in stab["curve"]]
    lines.append(tabulate(table, headers=["replicates", "identical", "within one move", "pairs separated"],
                          tablefmt="simple", disable_numparse=True))
    reached = stab["reached"]
    if reached:
        cost = f", about {reached['replicates'] * per_rep:.0f} s of this task's compute" if per_rep else ""
        lines.append(f"within one move >= {stab['target']:g} first at R={reached['replicates']}{cost}")
    else:
        lines.append(f"within one move >= {stab['target']:g} is reached at none of these designs: some differences "
                     "sit near the detection limit at each of them")
    return lines


def _mdd(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3f}"


def design_note(task_results: Sequence[JobResult], n_sim: int = 500) -> str | None:
    """One paragraph for a run's summary: what this design resolves on the task's headline metric
    (the closed-form MDD of its pairs of compared methods at its own replicates, and the projected
    chance that a re-run gives the same rank groups). None with fewer than 2 replicates."""
    values = comparisons.task_values(task_results)
    if values is None or len(values.values) < 2:
        return None
    pairs = pair_powers(task_results, n_sim=0)  # closed form only
    level = rule_alpha(len(pairs))
    mdds = [(stats.minimum_detectable_difference(p.components, p.components.replicates, alpha=level), p.a, p.b)
            for p in pairs]
    model = _stability_model(_methods_only(values))
    if model is None:
        return None
    stab = stability.rank_stability(model, model.replicates, values.higher_is_better, n_sim=n_sim, seed=values.seed)
    parts = [f"What {model.replicates} replicates resolve on {values.metric}:"]
    finite = [m for m in mdds if math.isfinite(m[0])]
    if finite:
        worst = max(finite)
        parts.append(f"the minimum detectable difference between two compared methods under the board's rule "
                     f"(80% power, paired t at {level:.3g}, Holm's first step over {len(pairs)} pairs) "
                     f"is {min(finite)[0]:.2f} to {worst[0]:.2f} ({worst[1]} vs {worst[2]} the hardest pair);")
    parts.append(f"a re-run of the whole benchmark would give identical rank groups with a projected chance of "
                 f"{stab.same:.2f}, and groups that differ by at most a move of one method to a neighbouring group "
                 f"with {stab.near:.2f} (it separates {stab.separated:.1f} of {stab.pairs} pairs on average). "
                 f"The command fexbench power prints the figures per pair and per design.")
    return " ".join(parts)


# -- the cost-aware design search (`fexbench power --budget`) -------------------------------------------
UNIT_FACTORS = (1, 2, 3)  # units per replicate tried, as multiples of the pilot's


@dataclass(frozen=True)
class TaskDesign:
    """One task's design: replicates x (units per replicate as a multiple of the pilot's), its
    predicted cost in step-seconds and its worst pair's MDD under the board's rule."""

    task: str
    replicates: int
    unit_factor: int
    units: int
    seconds: float
    mdd: float
    target: float

    @property
    def ratio(self) -> float:
        return self.mdd / self.target


def _timing(folder: Path) -> Mapping[str, Any]:
    from fexbench.core.cache import UnsafeFile, read_regular_file
    try:
        timing = json.loads(read_regular_file(folder / TIMING, 1 << 20).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, UnsafeFile):
        return {}
    return timing if isinstance(timing, dict) else {}


def step_seconds_per_replicate(timing: Mapping[str, Any], task: str) -> float | None:
    """A replicate of `task` in step-seconds: its preparations and jobs summed, divided by the
    replicates it ran (the task's own count where timing.json records one). Step-seconds are the
    seconds each step took in its process; `parallelism` turns a sum of them into wall time."""
    try:
        entry = timing["tasks"][task]
        reps = entry.get("replicates", timing.get("replicates", 1))
        return (float(entry["prepare_s"]) + float(sum(entry["jobs_s"].values()))) / max(1, int(reps))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def parallelism(timing: Mapping[str, Any], cores: int) -> tuple[float, str]:
    """How many step-seconds one wall-clock second holds on `cores` cores: measured from the pilot
    when its timing.json records a cold run's wall time (step-seconds / wall, scaled by the cores
    asked for over the pilot's), else 0.75 per core (the pilot's own machine state unknown)."""
    last = timing.get("last_run") if isinstance(timing.get("last_run"), dict) else None
    total = sum(filter(None, (step_seconds_per_replicate(timing, t) for t in (timing.get("tasks") or {}))))
    if last and last.get("jobs_resumed") == 0 and float(last.get("wall_s", 0)) > 0 and total > 0:
        reps_work = sum(float(e.get("prepare_s", 0)) + float(sum((e.get("jobs_s") or {}).values()))
                        for e in timing["tasks"].values())
        measured = reps_work / float(last["wall_s"])
        pilot_cpus = max(1, int(last.get("cpus") or cores))
        return measured * cores / pilot_cpus, f"measured by the pilot's cold run ({measured:.2f} on {pilot_cpus} CPUs)"
    return 0.75 * cores, "assumed 0.75 per core (the pilot's timing.json records no cold wall time)"


def _task_target(task: str, board: str, default: float) -> float:
    from fexbench.core import registry
    try:
        return float(getattr(registry.tasks.get(task), "resolution_targets", {}).get(board, default))
    except Exception:
        return default


def task_design(task: str, rows: Sequence[PairPower], per_rep: float, replicates: int, unit_factor: int,
                target: float) -> TaskDesign:
    """The worst pair's board-rule MDD and the cost of `replicates` x `unit_factor` on one task.
    Cost grows in proportion to the units (an upper bound: a replicate's fixed part does not)."""
    level = rule_alpha(len(rows))
    units = rows[0].components.units * unit_factor
    mdd = max(stats.minimum_detectable_difference(p.components, replicates, units=units, alpha=level) for p in rows)
    return TaskDesign(task, replicates, unit_factor, units, replicates * unit_factor * per_rep, mdd, target)


def search_designs(pairs: Sequence[PairPower], costs: Mapping[str, float], budget_s: float,
                   targets: Mapping[str, float], max_replicates: int = 40) -> dict[str, TaskDesign]:
    """Per task, replicates x units per replicate within `budget_s` step-seconds in all, chosen to
    bring the task furthest from its target (largest MDD / target) nearer first: greedily, each step
    buys the candidate (one more replicate, or the next unit factor) with the largest fall of that
    task's ratio per step-second; a task whose next step no longer fits stops growing."""
    by_task: dict[str, list[PairPower]] = {}
    for p in pairs:
        by_task.setdefault(p.task, []).append(p)
    tasks = sorted(t for t in by_task if costs.get(t))
    designs = {t: task_design(t, by_task[t], costs[t], 2, 1, targets[t]) for t in tasks}
    spent = sum(d.seconds for d in designs.values())
    if spent > budget_s:
        raise UsageError(f"the budget buys less than 2 replicates of every task ({spent:.0f} step-seconds needed, "
                         f"{budget_s:.0f} available): raise --budget or name fewer tasks")
    frozen: set[str] = set()
    while len(frozen) < len(tasks):
        task = max((t for t in tasks if t not in frozen), key=lambda t: designs[t].ratio)
        d = designs[task]
        options = []
        if d.replicates < max_replicates:
            options.append(task_design(task, by_task[task], costs[task], d.replicates + 1, d.unit_factor, d.target))
        bigger = [f for f in UNIT_FACTORS if f > d.unit_factor]
        if bigger:
            options.append(task_design(task, by_task[task], costs[task], d.replicates, bigger[0], d.target))
        options = [o for o in options if spent - d.seconds + o.seconds <= budget_s and o.mdd < d.mdd]
        if not options:
            frozen.add(task)
            continue
        best = max(options, key=lambda o: (d.ratio - o.ratio) / max(o.seconds - d.seconds, 1e-9))
        spent += best.seconds - d.seconds
        designs[task] = best
    return designs


def budget_report(folder: str | Path | Sequence[str | Path], budget_min: float, cores: int, board: str = "full",
                  target: float = 0.10, max_replicates: int = 40, shared_s: float | None = None
                  ) -> tuple[str, dict[str, Any]]:
    """`fexbench power --budget`: the per-task designs that fit `budget_min` minutes of wall time on
    `cores` cores, priced from the pilot's timing.json, with their predicted MDD under the board's
    rule against each task's resolution target for `board`."""
    folders = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
    per_run = []
    for f in folders:
        found, _ = read_results_dir(f)
        if not found:
            raise UsageError(no_results_message(
                f, f"{f}: no readable results; run a pilot first: fexbench run --replicates 3 --out {f}"))
        per_run.append(found)
    results = per_run[0] if len(folders) == 1 else pool_runs(per_run, folders)
    timing = _timing(folders[0])
    if not timing.get("tasks"):
        raise UsageError(f"{folders[0] / TIMING}: missing or unreadable; --budget prices designs from the pilot's "
                         "timing.json (written by fexbench run)")
    pairs = pair_powers(results, n_sim=0)
    costs = {t: c for t in {p.task for p in pairs} if (c := step_seconds_per_replicate(timing, t))}
    par, how = parallelism(timing, cores)
    shared = 0.0 if shared_s is None else shared_s
    budget_s = max(0.0, budget_min * 60.0 - shared) * par
    targets = {t: _task_target(t, board, target) for t in costs}
    designs = search_designs(pairs, costs, budget_s, targets, max_replicates)
    total = sum(d.seconds for d in designs.values())
    lines = [f"designs for a {budget_min:g}-minute budget on {cores} cores: {budget_s:.0f} step-seconds "
             f"(parallelism {par:.2f}, {how})",
             tabulate([[d.task, d.replicates, f"{d.units} (x{d.unit_factor})", f"{d.seconds:.0f}",
                        _mdd(d.mdd), f"{d.target:g}", "yes" if d.mdd <= d.target else f"no ({d.ratio:.1f}x)"]
                       for d in designs.values()],
                      headers=["task", "replicates", "units per replicate", "step-seconds", "board-rule MDD",
                               f"target ({board})", "reached"], tablefmt="simple", disable_numparse=True),
             f"predicted wall time: {total / par / 60 + shared / 60:.1f} min ({total:.0f} step-seconds / {par:.2f}"
             + (f" + {shared:.0f} s shared" if shared else "") + ")",
             "cost model: a replicate costs what the pilot's did per replicate (timing.json), more units per "
             "replicate cost in proportion (an upper bound); MDD: the worst pair of compared methods, Holm's "
             "first step over the task's pairs, from the pilot's variance components"]
    summary = {"budget_min": budget_min, "cores": cores, "board": board, "parallelism": par,
               "step_seconds_budget": budget_s, "predicted_wall_min": total / par / 60 + shared / 60,
               "designs": {d.task: dataclasses.asdict(d) for d in designs.values()}}
    return "\n".join(lines), summary
