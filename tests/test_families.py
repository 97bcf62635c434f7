"""The board's families of comparisons (docs/statistics.md#families): compared methods ranked among
themselves with rank intervals, "beats the control" one-sided, the oracle's gap with its interval;
roles and directions from the registered code; no infinite significance from zero spread; and
board.json, the same conclusions as data."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
from fexbench.analysis import board as board_json
from fexbench.analysis.comparisons import rank_task
from fexbench.cli.schema import board_problems
from fexbench.core import registry, stats
from fexbench.core.contract import Scored
from fexbench.core.metrics import Estimate, nanmean
from fexbench.core.results import JobResult, write_result
from fexbench.harness.pooling import pool

TASK = "waterbirds-spurious"  # registered: its headline (spearman_reliance, higher is better) comes from code


def _results(values: dict[str, np.ndarray], task: str = TASK) -> list[JobResult]:
    """One ok result per explainer from per-replicate unit values (R, n), the same units for all."""
    metric = registry.tasks.get(task).metrics[0]
    out = []
    for name, arr in values.items():
        scored = [[Scored.of((Estimate(metric, nanmean, (np.asarray(row, float),), n_resamples=200, seed=r),), {})]
                  for r, row in enumerate(arr)]
        pooled = pool(scored, n_resamples=200, seed=0)
        out.append(JobResult(task=task, explainer=name, oracle=False, status="ok", job_key="k", seed=0,
                             metrics=pooled.metrics, unit_values=pooled.unit_values))
    return out


def _board(rng, replicates=4, units=40, shifts=None):
    """An oracle well above three compared methods (m1 > m2 > m3, far apart) and two controls at 0."""
    shifts = shifts or {"oracle": 0.9, "m1": 0.7, "m2": 0.45, "m3": 0.2, "random": 0.0, "class-name": 0.0}
    replicate_effect = rng.normal(0, 0.02, (replicates, 1))
    return {name: np.clip(shift + replicate_effect + rng.normal(0, 0.05, (replicates, units)), -1, 1)
            for name, shift in shifts.items()}


def test_roles_come_from_the_code_and_controls_and_the_oracle_get_no_rank():
    ranking = rank_task(_results(_board(np.random.default_rng(0))))
    assert ranking.roles == {"oracle": "oracle", "random": "control", "class-name": "control",
                             "m1": "method", "m2": "method", "m3": "method"}
    assert set(ranking.rank_intervals) == {"m1", "m2", "m3"}  # controls and the oracle hold no rank
    assert ranking.rank_intervals == {"m1": (1, 1), "m2": (2, 2), "m3": (3, 3)}
    assert all(ranking.beats[m] == {"random": True, "class-name": True} for m in ("m1", "m2", "m3"))
    assert all(gap.significant and gap.difference > 0 for gap in ranking.oracle_gaps.values())
    assert ranking.rank_label("m1") == "1" and ranking.rank_label("random") == "control"


def test_indistinguishable_methods_get_a_wide_rank_interval_not_a_shared_first_place():
    rng = np.random.default_rng(1)
    values = _board(rng, shifts={"oracle": 0.9, "m1": 0.5, "m2": 0.5, "m3": 0.1, "random": 0.0})
    values["m2"] = values["m1"] + rng.normal(0, 0.05, values["m1"].shape)  # no real difference
    ranking = rank_task(_results(values))
    assert ranking.rank_intervals["m1"] == (1, 2) and ranking.rank_intervals["m2"] == (1, 2)
    assert ranking.rank_intervals["m3"] == (3, 3)


def test_the_oracle_is_separated_from_random_although_all_pairs_holm_would_not():
    """The published case: three replicates, oracle - random about 0.87 with t about 12 on 2 df.
    Holm over all 21 pairs of seven explainers needs |t| >= 20.5; the oracle's own family of six does not."""
    rng = np.random.default_rng(2)
    names = {"oracle": 0.9, "m1": 0.6, "m2": 0.55, "m3": 0.5, "m4": 0.45, "random": 0.0, "class-name": 0.0}
    values = {n: s + rng.normal(0, 0.002, (3, 30)) for n, s in names.items()}
    values["random"] = values["random"] + np.array([[0.06], [-0.11], [0.13]])  # replicate spread: t about 12
    results = _results(values)
    ranking = rank_task(results)
    assert ranking.oracle_gaps["random"].significant
    comp = ranking.comparisons[("oracle", "random")]
    assert comp.p_value * 21 > 0.05  # Bonferroni-Holm's first step over all 21 pairs would not separate them
    assert "random" not in ranking.rank_intervals


def test_a_file_cannot_flip_the_direction_or_the_role():
    results = _results(_board(np.random.default_rng(3)))
    forged = []
    for r in results:
        flipped = tuple(dataclasses.replace(m, higher_is_better=not m.higher_is_better) for m in r.metrics)
        forged.append(dataclasses.replace(r, metrics=flipped, oracle=(r.explainer == "m3")))
    honest, tampered = rank_task(results), rank_task(forged)
    assert tampered.higher_is_better is True and tampered.rank_intervals == honest.rank_intervals
    assert tampered.roles["m3"] == "method"


def test_three_equal_replicate_differences_are_not_infinitely_significant():
    """concept-transfer's discrete case: the same difference in every replicate (0.458 three times).
    The old paired t gave p = 0 and a zero-width interval."""
    rng = np.random.default_rng(4)
    base = (rng.random((3, 24)) < 0.4).astype(float)
    a = stats.Replicated(nanmean, tuple((row,) for row in base))
    shifted = base.copy()
    for row in shifted:  # each replicate loses the same number of hits: equal differences
        row[np.flatnonzero(row)[:3]] = 0.0
    b = stats.Replicated(nanmean, tuple((row,) for row in shifted))
    diffs = a.replicate_values() - b.replicate_values()
    assert np.ptp(diffs) < 1e-12 and diffs[0] > 0  # equal up to float rounding, as on the real board
    comp = stats.compare(a, b)
    assert comp.p_value > 0 and comp.high - comp.low > 0 and comp.method == "unit-variance"
    assert comp.low < diffs[0] < comp.high
    same = stats.compare(a, a)
    assert same.p_value == 1.0 and same.method == "no-spread"


def test_board_json_has_the_documented_shape_and_validate_recomputes_it(tmp_path):
    results = _results(_board(np.random.default_rng(5)))
    data = board_json.board(results)
    assert board_json.problems(data) == []
    task = data["tasks"][TASK]
    assert task["metric"] == "spearman_reliance"
    assert task["explainers"]["m1"]["rank"] == [1, 1] and task["explainers"]["oracle"]["rank"] is None
    assert task["explainers"]["random"]["role"] == "control" and task["explainers"]["m2"]["beats"]["random"] is True
    for r in results:
        write_result(tmp_path, r)
    (tmp_path / board_json.BOARD_FILE).write_text(json.dumps(data))
    assert board_problems(tmp_path) == []
    data["tasks"][TASK]["explainers"]["m3"]["rank"] = [1, 1]  # a hand-edited board
    (tmp_path / board_json.BOARD_FILE).write_text(json.dumps(data))
    assert any("differs from the board its result files give" in p for p in board_problems(tmp_path))
    data["tasks"][TASK]["explainers"]["random"]["rank"] = [1, 3]
    assert any("random.rank" in p for p in board_json.problems(data))


def test_power_reports_the_mdd_of_the_boards_rule_beside_the_uncorrected_one():
    comp = stats.Components(0.0, 0.0, 0.04, 40, 1, 3, 0.001, False)
    plain = stats.minimum_detectable_difference(comp, 3)
    from fexbench.analysis.power import rule_alpha

    ruled = stats.minimum_detectable_difference(comp, 3, alpha=rule_alpha(6))
    assert ruled > 1.5 * plain and math.isfinite(ruled)
