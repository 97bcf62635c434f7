"""Per-task designs: a task's own number of replicates ([run] task_replicates) and the cost-aware
design search of `fexbench power --budget` (fexbench.analysis.power.search_designs)."""
from __future__ import annotations

import json
import math
import pickle

import pytest

from fexbench import presets
from fexbench.analysis import power
from fexbench.core import stats
from fexbench.harness.config import ConfigError, default_config, load_config
from fexbench.harness.graph import build_graph


def _pair(task: str, replicate: float, unit: float, units: int = 10, a: str = "a", b: str = "b") -> power.PairPower:
    comp = stats.Components(replicate=replicate, seed=0.0, unit=unit, units=units, seeds=1, replicates=3,
                            observed=replicate + unit / units, seed_estimated=False)
    return power.PairPower(task, "m", a, b, comp, math.nan, math.nan)


def test_a_task_runs_its_own_replicates_and_the_rest_the_runs():
    config = default_config().with_overrides(task_replicates={"sanity-randomization": 5})
    env = config.environment()
    graph = build_graph(config.task_names(), config.explainer_names(), env, config.task_configs(),
                        config.explainer_configs())
    preps = [n for n in graph if n.kind == "prepare"]
    assert sum(n.task == "sanity-randomization" for n in preps) == 5
    assert sum(n.task == "waterbirds-spurious" for n in preps) == 3
    assert graph.replicates_of("sanity-randomization") == 5
    job = next(n for n in graph if n.kind == "job" and n.task == "sanity-randomization")
    assert sum(d.startswith("prepare:") for d in job.deps) == 5
    pickle.dumps(env.task_replicates)  # workers receive the environment (its other mappings are converted)


def test_an_unknown_task_or_a_bad_count_is_named():
    with pytest.raises(ConfigError, match="task_replicates.nope: unknown task"):
        default_config().with_overrides(task_replicates={"nope": 2})
    with pytest.raises(ConfigError, match="task_replicates.sanity-randomization"):
        default_config().with_overrides(task_replicates={"sanity-randomization": 0})


def test_the_full_preset_gives_every_task_its_searched_replicates():
    config = load_config(presets.path("full"))
    env = config.environment()
    assert set(config.run.task_replicates) == set(config.task_names())
    assert all(env.replicates_for(t) == n for t, n in config.run.task_replicates.items())


def test_the_search_spends_where_the_ratio_to_target_falls_most():
    # a noisy task far from its target and a quiet one already near it: the budget goes to the first
    pairs = [_pair("noisy", replicate=0.04, unit=0.1), _pair("quiet", replicate=0.0001, unit=0.001)]
    costs = {"noisy": 10.0, "quiet": 10.0}
    designs = power.search_designs(pairs, costs, budget_s=400.0, targets={"noisy": 0.1, "quiet": 0.1})
    assert designs["noisy"].replicates > designs["quiet"].replicates
    assert sum(d.seconds for d in designs.values()) <= 400.0
    more = power.search_designs(pairs, costs, budget_s=800.0, targets={"noisy": 0.1, "quiet": 0.1})
    assert more["noisy"].mdd < designs["noisy"].mdd  # more budget, more resolution where it was worst


def test_replicates_come_first_and_units_once_replicates_are_capped():
    unit_bound = [_pair("t", replicate=0.0, unit=2.0, units=4)]
    replicate_bound = [_pair("t", replicate=0.05, unit=0.0001, units=4)]
    by_reps = power.search_designs(replicate_bound, {"t": 1.0}, 30.0, {"t": 0.01})["t"]
    assert by_reps.unit_factor == 1 and by_reps.replicates == 30  # more replicates: more df, less variance
    capped = power.search_designs(unit_bound, {"t": 1.0}, 60.0, {"t": 0.01}, max_replicates=5)["t"]
    assert capped.replicates == 5 and capped.unit_factor == max(power.UNIT_FACTORS)
    assert capped.mdd < power.task_design("t", unit_bound, 1.0, 5, 1, 0.01).mdd


def test_a_budget_below_two_replicates_is_refused():
    with pytest.raises(Exception, match="less than 2 replicates"):
        power.search_designs([_pair("t", 0.01, 0.1)], {"t": 100.0}, 150.0, {"t": 0.1})


def test_parallelism_comes_from_a_recorded_cold_run():
    timing = {"replicates": 3, "tasks": {"t": {"prepare_s": 200.0, "jobs_s": {"x": 100.0}, "replicates": 3}},
              "last_run": {"wall_s": 200.0, "jobs_computed": 1, "jobs_resumed": 0, "cpus": 2}}
    par, how = power.parallelism(timing, cores=2)
    assert par == pytest.approx(1.5) and "measured" in how
    assert power.step_seconds_per_replicate(timing, "t") == pytest.approx(100.0)
    resumed = json.loads(json.dumps(timing))
    resumed["last_run"]["jobs_resumed"] = 1  # a resumed run's wall time is not a cold run's
    assert "assumed" in power.parallelism(resumed, cores=2)[1]
