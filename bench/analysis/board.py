"""The board as data: `board.json`, what a run folder and a published site conclude per task, in one
machine-readable file (docs/results-schema.md#board-json).

    {"tasks": {TASK: {"metric": NAME, "higher_is_better": bool, "explainers": {NAME: {
        "value": x, "ci": [lo, hi], "role": "method" | "control" | "oracle",
        "rank": [lo, hi] or null, "beats": {CONTROL: bool}, "oracle_gap": [d, lo, hi] or null}}}}}

Everything in it is computed from the result files by fexbench.analysis.comparisons (roles,
directions and headlines from the registered code); `validate` checks a file against that shape,
so a reader never has to trust a hand-edited board.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from fexbench.analysis.comparisons import ROLES, TaskRanking, rank_all
from fexbench.core.results import JobResult

BOARD_FILE = "board.json"
BOARD_VERSION = 1


def _num(x: float) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def board(results: Sequence[JobResult], rankings: Mapping[str, TaskRanking] | None = None) -> dict[str, Any]:
    """The board of a set of results (every task's headline metric)."""
    rankings = rank_all(results) if rankings is None else rankings
    tasks: dict[str, Any] = {}
    for task, ranking in sorted(rankings.items()):
        rows = {r.explainer: r for r in results if r.task == task and r.status == "ok"}
        explainers = {}
        for name, kind in sorted(ranking.roles.items()):
            metric = next((m for m in rows[name].metrics if m.name == ranking.metric), None) if name in rows else None
            gap = ranking.oracle_gaps.get(name)
            explainers[name] = {
                "value": _num(metric.value) if metric else None,
                "ci": [_num(metric.ci_low), _num(metric.ci_high)] if metric else [None, None],
                "role": kind,
                "rank": list(ranking.rank_intervals[name]) if name in ranking.rank_intervals else None,
                "beats": dict(ranking.beats.get(name, {})),
                "oracle_gap": [_num(gap.difference), _num(gap.low), _num(gap.high)] if gap else None,
            }
        tasks[task] = {"metric": ranking.metric, "higher_is_better": ranking.higher_is_better,
                       "explainers": explainers, "not_ranked": dict(ranking.excluded)}
    return {"board_version": BOARD_VERSION, "tasks": tasks}


def problems(data: Any, source: str = BOARD_FILE) -> list[str]:
    """Every way `data` breaks the board's shape, each naming the field; [] when it is valid."""
    out: list[str] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
        return [f"{source}: expected an object with a 'tasks' object"]
    if data.get("board_version") != BOARD_VERSION:
        out.append(f"{source}: board_version must be {BOARD_VERSION}, not {data.get('board_version')!r}")
    for task, entry in data["tasks"].items():
        where = f"{source}: tasks.{task}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("metric"), str) \
                or not isinstance(entry.get("explainers"), Mapping):
            out.append(f"{where}: needs 'metric' (a name) and 'explainers' (an object)")
            continue
        methods = [n for n, e in entry["explainers"].items() if isinstance(e, Mapping) and e.get("role") == "method"]
        for name, e in entry["explainers"].items():
            at = f"{where}.explainers.{name}"
            if not isinstance(e, Mapping):
                out.append(f"{at}: expected an object")
                continue
            if e.get("role") not in ROLES:
                out.append(f"{at}.role: one of {', '.join(ROLES)}, not {e.get('role')!r}")
            if e.get("value") is not None and not isinstance(e.get("value"), (int, float)):
                out.append(f"{at}.value: a number or null")
            ci = e.get("ci")
            if not (isinstance(ci, list) and len(ci) == 2 and all(c is None or isinstance(c, (int, float)) for c in ci)):
                out.append(f"{at}.ci: [low, high] of numbers or nulls")
            elif None not in ci and ci[0] > ci[1]:
                out.append(f"{at}.ci: low {ci[0]} above high {ci[1]}")
            rank = e.get("rank")
            if e.get("role") == "method":
                if not (isinstance(rank, list) and len(rank) == 2 and all(isinstance(x, int) for x in rank)
                        and 1 <= rank[0] <= rank[1] <= len(methods)):
                    out.append(f"{at}.rank: [best, worst] with 1 <= best <= worst <= {len(methods)} compared methods")
            elif rank is not None:
                out.append(f"{at}.rank: a {e.get('role')} has no rank among methods (null)")
            beats = e.get("beats")
            if not isinstance(beats, Mapping) or not all(isinstance(v, bool) for v in beats.values()):
                out.append(f"{at}.beats: an object of control -> true/false")
    return out
