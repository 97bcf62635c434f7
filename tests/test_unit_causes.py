"""unit-causes: interventions change one attribute only; planted units get the causes they were
built with; the scoring gives a perfect explainer 1 and the random control chance; dead and
constant units are excluded and counted.

The planted subject is hand-built, not trained: unit 0 is the spatial max of a red detector (an RBF
around the world's red), unit 1 the spatial mean of an ocean-blue detector (it sees the background,
which fills most pixels), unit 2 is always 0 (dead) and unit 3 always 1 (constant).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from fexbench.core.contract import Explanation, Subject
from fexbench.data import world
from fexbench.data.imageset import DataError
from fexbench.models.subjects import TorchClassifier
from fexbench.core.metrics import Estimate, nanmean
from fexbench.tasks.unit_causes import (ATTRIBUTE_VALUES, LAYOUT_VALUES, TOP1, UnitCauses, measure_subject,
                                        naming_chance, profile_units)
from conftest import run_baselines

TINY = {"rhos": [0.98], "seeds": [0], "p_natives": [0.0], "n_scenes": 24, "units_per_subject": None,
        "n_bootstrap": 300,
        "waterbirds": {"n_train": 200, "n_probe": 120, "n_test": 40, "epochs": 1},
        "imagenet9": {"n_train": 200, "n_probe": 120, "n_test": 18, "epochs": 1}}


class Detector(nn.Module):
    """Per pixel relu(1 - |rgb - colour| / width), pooled over space by max or mean."""

    def __init__(self, rgb: tuple[int, int, int], pool: str, width: float = 0.2):
        super().__init__()
        self.register_buffer("colour", torch.tensor(rgb, dtype=torch.float32)[None, :, None, None] / 255)
        self.pool, self.width = pool, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        response = torch.relu(1 - (x - self.colour).pow(2).sum(dim=1).add(1e-8).sqrt() / self.width)
        return response.amax(dim=(1, 2)) if self.pool == "max" else response.mean(dim=(1, 2))


class PlantedUnits(nn.Module):
    def __init__(self):
        super().__init__()
        self.red = Detector(world.COLOURS["red"], "max")
        self.ocean = Detector((25, 70, 150), "mean")  # the ocean texture's base colour
        self.features = nn.Identity()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(len(x))
        units = self.features(torch.stack([self.red(x), self.ocean(x), zeros, zeros + 1], dim=1))
        return self.head(units)


def planted_subject() -> Subject:
    def to_unit_range(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255

    model = TorchClassifier(PlantedUnits(), {"penultimate": "features", "logits": "logits"}, to_unit_range)
    return Subject("planted", model, ("a", "b"), "planted-weights")


@pytest.fixture(scope="module")
def planted_profiles():
    scenes, _ = world.imagenet9_scenes(90, seed=3, p_native=0.0)
    images = world.render(scenes)[0]
    return measure_subject(planted_subject(), images, scenes, LAYOUT_VALUES["imagenet9"], 32)


# ---------------------------------------------------------------- interventions

@pytest.mark.parametrize("attribute,value", [("colour", "red"), ("background", "lava"), ("shape", "star")])
def test_an_intervention_changes_only_its_attribute(attribute, value):
    scenes, _ = world.imagenet9_scenes(40, seed=1, p_native=0.0)
    changed = world.intervene(scenes, attribute, value)
    for f in dataclasses.fields(scenes):
        same = np.array_equal(getattr(scenes, f.name), getattr(changed, f.name))
        assert same == (f.name != attribute), f.name
    assert (getattr(changed, attribute) == world.INTERVENABLE[attribute].index(value)).all()
    before, mask = world.render(scenes)
    after, _ = world.render(changed)
    if attribute == "colour":  # the background's pixels are untouched, byte for byte
        assert np.array_equal(before[~mask], after[~mask])
    if attribute == "background":  # the object's pixels are untouched
        assert np.array_equal(before[mask], after[mask])


def test_size_intervention_moves_into_the_other_class_and_keeps_objects_inside():
    scenes, _ = world.imagenet9_scenes(200, seed=2, p_native=0.0)
    for value, code in (("small", 0), ("large", 1)):
        changed = world.intervene(scenes, "size", value)
        assert (changed.size_class == code).all()
        kept = scenes.size_class == code
        assert np.array_equal(changed.size[kept], scenes.size[kept]) and np.array_equal(changed.cx[kept], scenes.cx[kept])
        for c in (changed.cx, changed.cy):
            assert (c - changed.size / 2 >= world.BORDER - 1e-9).all() and (c + changed.size / 2 <= 1 - world.BORDER + 1e-9).all()
        for f in ("shape", "colour", "background", "angle", "bg_seed", "obj_seed"):
            assert np.array_equal(getattr(changed, f), getattr(scenes, f))


def test_bad_interventions_name_the_key():
    scenes, _ = world.imagenet9_scenes(4, seed=0)
    with pytest.raises(DataError, match="'texture'"):
        world.intervene(scenes, "texture", "red")
    with pytest.raises(DataError, match="'mauve'"):
        world.intervene(scenes, "colour", "mauve")


# ---------------------------------------------------------------- planted units

def test_a_red_detector_is_caused_by_red(planted_profiles):
    attribute, value, effect = planted_profiles.top_cause(0)
    assert (attribute, value) == ("colour", "red") and effect > 0
    shares = planted_profiles.shares(0)
    assert max(shares, key=shares.get) == "colour" and shares["colour"] > 0.5
    effects = planted_profiles.effects(0, ("colour",))
    assert all(effects["red"] > 0 >= v for c, v in effects.items() if c != "red")


def test_a_background_detector_is_caused_by_its_background(planted_profiles):
    attribute, value, _ = planted_profiles.top_cause(1)
    assert (attribute, value) == ("background", "ocean")
    shares = planted_profiles.shares(1)
    assert max(shares, key=shares.get) == "background"


def test_dead_and_constant_units_are_excluded_and_counted(planted_profiles):
    assert list(planted_profiles.status) == ["live", "live", "dead", "constant"]
    assert planted_profiles.counts() == {"live": 2, "dead": 1, "constant": 1, "no_cause": 0}
    assert list(planted_profiles.live) == [0, 1]


def test_profiles_check_the_counterfactual_layout():
    values = {"colour": ("red", "blue"), "size": world.SIZES}
    with pytest.raises(DataError, match="blocks"):
        profile_units(np.ones((5, 3)), np.ones((7, 3)), values, 2)


# ---------------------------------------------------------------- the task end to end

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("unit-causes")
    env, results = run_baselines(root, "unit-causes", TINY)
    prepared = UnitCauses(**TINY).prepare(env)  # from the cache the run filled
    return prepared, results


def test_ground_truth_counts_units_and_their_causes(tiny_run):
    prepared, _ = tiny_run
    assert len(prepared.cases) == 2
    for case in prepared.cases:
        truth = prepared.ground_truth[case.subject.name]
        counts = truth["unit_counts"]
        assert counts["total"] == 64 and counts["live"] + counts["dead"] + counts["constant"] + counts["no_cause"] == 64
        assert len(case.targets) == counts["live"] == len(truth["units"])
        assert sum(truth["top_cause_attribute_counts"].values()) == counts["live"]
        layout = LAYOUT_VALUES[truth["layout"]]
        for unit, target in zip(truth["units"], case.targets):
            assert unit["unit"] == target.index and target.kind == "unit" and target.layer == "penultimate"
            assert unit["top_cause"] in layout[unit["top_cause_attribute"]]
            assert unit["effects"][unit["top_cause"]] == max(unit["effects"][v] for a in ("shape", "colour", "size", "background")
                                                          for v in layout[a])


def test_naming_the_top_cause_scores_one_and_naming_another_scores_zero(tiny_run):
    prepared, _ = tiny_run
    task = UnitCauses(**TINY)

    def explain(pick):
        return {c.subject.name: [Explanation.from_weights(t, {pick(u): 1.0})
                                 for t, u in zip(c.targets, prepared.ground_truth[c.subject.name]["units"])]
                for c in prepared.cases}

    right = {m.name: m for m in task.score(prepared, explain(lambda u: u["top_cause"])).metrics}
    assert right["top1_cause"].value == 1.0 and right["top3_cause"].value == 1.0
    wrong = {m.name: m for m in task.score(prepared, explain(
        lambda u: min(u["effects"], key=u["effects"].get))).metrics}  # the value that drives it down most
    assert wrong["top1_cause"].value == 0.0 and wrong["effect_rank_correlation"].value < 0


def test_random_sits_at_chance_and_the_oracle_above_it(tiny_run):
    _, results = tiny_run
    assert all(r.status == "ok" for r in results.values()), {k: r.error for k, r in results.items()}
    random = {m.name: m for m in results["random"].metrics}
    for name in ("top1_cause", "top3_cause"):
        m = random[name]
        assert m.ci_low <= m.chance <= m.ci_high, (name, m)
    # random names values in proportion to their synonyms (ocean has five words, lava two), so when
    # the zoo's effects favour some values its rank correlation drifts slightly off the 0 of a
    # uniform naming; both correlations stay near 0 (about 100 units: a standard error near 0.02)
    assert abs(random["effect_rank_correlation"].value) < 0.05, random["effect_rank_correlation"]
    assert abs(random["background_share_spearman"].value) < 0.1, random["background_share_spearman"]
    # chance is that of naming vocabulary words at random, at the scored units' top causes
    prepared, _ = tiny_run
    tops = [u["top_cause"] for c in prepared.cases for u in prepared.ground_truth[c.subject.name]["units"]]
    p = naming_chance(world.WATERBIRDS_CLASSES)
    assert random["top1_cause"].chance == pytest.approx(np.mean([p[v] for v in tops]))
    assert sum(p.values()) == pytest.approx(1.0) and p["ocean"] > p["red"] > 0
    assert TOP1.chance == pytest.approx(1 / len(ATTRIBUTE_VALUES))  # the declared one: uniform naming
    oracle = {m.name: m for m in results["oracle"].metrics}
    assert oracle["top3_cause"].value > random["top3_cause"].ci_high
    per_subject = results["oracle"].per_subject
    assert all(row["unit"] >= 0 for s in per_subject.values() for row in s["units"])


def test_the_two_stage_bootstrap_resamples_subjects():
    # two subjects whose units disagree completely: the interval spans both, a plain bootstrap over
    # 200 units would be narrow around 0.5 (the Estimate's interval is fexbench.core.stats')
    hits = np.r_[np.ones(100), np.zeros(100)]
    two = Estimate(TOP1, nanmean, (hits,), n_resamples=200, clusters=[0] * 100 + [1] * 100).value()
    assert two.ci_low == 0.0 and two.ci_high == 1.0
    each = Estimate(TOP1, nanmean, (hits,), n_resamples=200, clusters=list(range(200))).value()
    assert 0.35 < each.ci_low < 0.5 < each.ci_high < 0.65


def test_every_metric_carries_the_subject_of_each_unit(tiny_run):
    prepared, results = tiny_run
    subjects = [s for s, case in enumerate(prepared.cases)
                for _ in prepared.ground_truth[case.subject.name]["units"]]
    assert len(set(subjects)) == len(prepared.cases) == 2
    for result in results.values():
        assert result.config["code_versions"]["task"] == UnitCauses.version == 3
        for m in UnitCauses.metrics:
            assert result.unit_values[m.name]["clusters"] == [subjects]


def test_bad_options_name_the_key():
    with pytest.raises(DataError, match="waterbirds.n_trian"):
        UnitCauses(waterbirds={"n_trian": 5})._layouts(None)
    with pytest.raises(DataError, match="units_per_subject"):
        UnitCauses(units_per_subject=0)
    assert TOP1.higher_is_better and TOP1.value_range == (0.0, 1.0)


def test_texplain_budgets_feature_targets_apart_from_classes():
    from fexbench.core.contract import Target
    from fexbench.explainers.texplain import TExplain

    explainer = TExplain(n_sentences=500, unit_sentences=40)
    assert explainer.sentence_budget(Target("class", 0)) == 500
    assert explainer.sentence_budget(Target("unit", 3)) == 40
    assert explainer.sentence_budget(Target("direction", 0, direction=(1.0,))) == 40
    assert TExplain(unit_sentences=None).sentence_budget(Target("unit", 3)) == TExplain().n_sentences
    with pytest.raises(ValueError, match="unit_sentences"):
        TExplain(unit_sentences=0)
