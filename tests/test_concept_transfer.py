"""concept-transfer: the ridge map, the measured concept of a unit, the scoring, and the task end to
end, with the association ground truth (the default) and the causal one (truth = "causal")."""
import dataclasses

import numpy as np
import pytest

from fexbench.core.contract import Case, Context, Explanation, Prepared, Probe, Subject, Target
from fexbench.core.seeds import derive_seed
from fexbench.tasks.concept_transfer import (AGREEMENT, ATTRIBUTE_VALUES, ConceptTransfer, best_concept, fit_linear_map,
                                          hit_at_k, jaccard, top_words, wilson_ci)
from fexbench.data.concepts import concept_shares
from fexbench.data.imageset import DataError
from fexbench.data.world_concepts import world_vocabulary
from fexbench.data import world
from fexbench.models.unit_effects import (LAYOUT_VALUES, choose_scenes, counterfactual_scenes, counterfactual_set,
                                          profile_directions, profile_units)
from conftest import BASELINES, run_baselines


def test_ridge_map_recovers_a_planted_linear_relation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(600, 12))
    w = rng.normal(size=(7, 12))
    b = a @ w.T + 3.0 + 0.01 * rng.normal(size=(600, 7))
    linear = fit_linear_map(a[:400], b[:400])
    assert linear.r2(a[400:], b[400:]) > 0.999
    assert np.allclose(linear.coef, w, atol=0.02) and np.allclose(linear.intercept, 3.0, atol=0.02)
    # a direction of b's space read out from a's features: the same activation, up to the intercept
    v = rng.normal(size=7)
    u = linear.readout(v)
    assert np.allclose(u, w.T @ v, atol=0.1)
    assert np.corrcoef(a[400:] @ u, b[400:] @ v)[0, 1] > 0.999
    # with no relation at all, held-out R^2 is near 0, not near 1
    assert fit_linear_map(a[:400], rng.normal(size=(400, 7))).r2(a[400:], rng.normal(size=(200, 7))) < 0.1


def test_planted_unit_concept_is_recovered():
    rng = np.random.default_rng(1)
    n = 2000
    attrs = {"shape": rng.choice(world.SHAPES, n), "colour": rng.choice(world.COLOUR_NAMES, n),
             "background": rng.choice(world.BACKGROUNDS, n)}
    unit = 2.0 * (attrs["background"] == "lava") + 0.5 * (attrs["shape"] == "star") + rng.normal(size=n)
    concept, auc = best_concept(unit, attrs)
    assert concept == "lava" and auc > 0.8
    # negating the unit makes 'lava' the least likely concept
    assert best_concept(-unit, attrs)[0] != "lava"
    assert best_concept(-2.0 * (attrs["colour"] == "pink") + rng.normal(size=n), attrs)[0] != "pink"


def test_hit_at_k_and_ties():
    vocab = world_vocabulary(world.SHAPES)
    t = Target("unit", 0)
    e = Explanation.from_weights(t, {"lava": 3.0, "star": 2.0, "red": 1.0})
    shares = concept_shares(vocab, e, ATTRIBUTE_VALUES)
    assert hit_at_k(shares, "lava", 1) == 1.0 and hit_at_k(shares, "star", 1) == 0.0
    assert hit_at_k(shares, "red", 3) == 1.0 and hit_at_k(shares, "snow", 3) == 0.0
    # "grass" also names the group concept land; that must not halve it against "red", which names no group
    grass = concept_shares(vocab, Explanation.from_weights(t, {"grass": 1.0, "red": 0.9}), ATTRIBUTE_VALUES)
    assert hit_at_k(grass, "grass", 1) == 1.0 and grass["grass"] == pytest.approx(1 / 1.9)
    # "water" names ocean and lake equally: a tie across the top-1 cut is worth half
    tie = concept_shares(vocab, Explanation.from_weights(t, {"water": 1.0}), ATTRIBUTE_VALUES)
    assert hit_at_k(tie, "lake", 1) == 0.5 and hit_at_k(tie, "ocean", 2) == 1.0
    # the class concept 'star' (what class-name says) counts as the shape: all the weight lands on it
    assert concept_shares(vocab, Explanation.from_weights(t, {"star": 1.0}), ATTRIBUTE_VALUES) == pytest.approx({"star": 1.0})
    assert jaccard(top_words(Explanation.from_weights(t, {"Waves": 2.0, "sand": 1.0})),
                   top_words(Explanation.from_weights(t, {"wave": 1.0}))) == 0.5
    assert 0.0 < AGREEMENT.chance < 0.1


def test_wilson_interval_is_not_degenerate_at_zero_hits():
    low, high = wilson_ci([0.0] * 16)
    assert low == 0.0 and 0.15 < high < 0.25  # 0 of 16 hits: a chance of 1/28 is not excluded
    low, high = wilson_ci([1.0] * 8 + [0.0] * 8)
    assert low < 0.5 < high and low == pytest.approx(1 - high)
    assert np.isnan(wilson_ci([])[0])
    # explainer seeds: each target's hit is averaged over the seeds first
    assert wilson_ci([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]) == wilson_ci([1.0, 0.5, 0.5, 0.0])


def _prepared(concepts):
    probe = Probe(np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 1)), np.zeros((1, 9)), "penultimate", ("a",))
    cases = tuple(Case(Subject(n, None, world.SHAPES, n), Context(probe, ()), ()) for n in ("A", "B"))
    truth = {"A": {}, "B": {"r2_heldout": 0.9, "targets": [{"target": f"u{i}", "concept": c} for i, c in enumerate(concepts)]}}
    return Prepared(cases, truth, {})


def test_scoring_pairs_transferred_with_direct():
    concepts = ["lava", "star", "red", "snow"]
    targets = [Target("unit", i) for i in range(4)]
    right = [Explanation.from_weights(t, {c: 1.0, "blue": 0.5}) for t, c in zip(targets, concepts)]
    second = [Explanation.from_weights(t, {"blue": 1.0, c: 0.5}) for t, c in zip(targets, concepts)]
    scored = ConceptTransfer(n_bootstrap=100).score(_prepared(concepts), {"A": second, "B": right})
    m = {v.name: v.value for v in scored.metrics}
    assert m["direct_top1"] == 1.0 and m["transfer_top1"] == 0.0 and m["transfer_top3"] == 1.0
    assert m["agreement_jaccard"] == 1.0  # the same words, in another order


TINY = dict(n_units=4, n_directions=4, n_fit=600, n_test=400, target_width=12, n_bootstrap=200,
            imagenet9=dict(p_natives=(0.4,), n_train=900, n_probe=270, n_test=450, epochs=4, width=8))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_baselines(tmp_path_factory.mktemp("ct"), "concept-transfer", TINY)


def test_transfer_end_to_end(tiny_run):
    _, results = tiny_run
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    truth = results["oracle"].ground_truth
    (target,) = [t for t in truth.values() if "targets" in t]
    assert 0.3 < target["r2_heldout"] <= 1.0 and len(target["targets"]) == 8
    assert all(t["concept"] in world.SHAPES + world.COLOUR_NAMES + world.SIZES + world.BACKGROUNDS
               for t in target["targets"])
    oracle = results["oracle"]
    assert oracle.metric("direct_top3").value >= 0.75
    assert oracle.metric("transfer_top3").value >= 0.5
    assert oracle.metric("direct_top1").value > results["random"].metric("direct_top1").value


# ---------------------------------------------------------------- the causal ground truth

# 12 directions: on this tiny pair the two truths then name different concepts for some target,
# so a causal truth that fell back to the association would fail test_causal_truth_end_to_end
CAUSAL = dict(TINY, n_directions=12, truth="causal", n_causal_scenes=40)


def test_the_truth_option_is_checked_and_the_default_keeps_its_config():
    assert "truth" not in ConceptTransfer().config() and "n_causal_scenes" not in ConceptTransfer().config()
    causal = ConceptTransfer(truth="causal").config()
    assert causal["truth"] == "causal" and causal["n_causal_scenes"] == 200
    assert {k: v for k, v in causal.items() if k not in ("truth", "n_causal_scenes")} == ConceptTransfer().config()
    with pytest.raises(ValueError, match="truth"):
        ConceptTransfer(truth="interventional")
    with pytest.raises(ValueError, match="n_causal_scenes"):
        ConceptTransfer(truth="causal", n_causal_scenes=1)


def test_a_planted_unit_gets_different_associational_and_causal_concepts():
    """Activation 100 when the background is lava AND the object large, plus 1 when it is red. Red
    best separates the activations (AUROC about 0.95: the spikes are rare), while setting the
    background to lava raises it most (by about 56 on average, red by about 1): the two truths differ."""
    values = LAYOUT_VALUES["imagenet9"]
    scenes, _ = world.imagenet9_scenes(900, seed=5, p_native=0.0)

    def planted(s):
        lava, red = world.BACKGROUNDS.index("lava"), world.COLOUR_NAMES.index("red")
        return (100.0 * ((s.background == lava) & (s.size_class == 1)) + 1.0 * (s.colour == red))[:, None]

    attributes = {"shape": np.asarray(world.SHAPES)[scenes.shape], "colour": np.asarray(world.COLOUR_NAMES)[scenes.colour],
                  "size": np.asarray(world.SIZES)[scenes.size_class],
                  "background": np.asarray(world.BACKGROUNDS)[scenes.background]}
    assert best_concept(planted(scenes)[:, 0], attributes)[0] == "red"
    chosen = choose_scenes(len(scenes), 300, seed=0)
    cf_acts = planted(counterfactual_scenes(scenes.subset(chosen), values))
    profile = profile_directions(planted(scenes), cf_acts, np.ones((1, 1)), values, len(chosen))
    attribute, value, effect = profile.top_cause(0)
    assert (attribute, value) == ("background", "lava") and effect > 10 * profile.effects(0)["red"] > 0


def test_direction_profiles_are_linear_in_the_unit_profiles():
    rng = np.random.default_rng(0)
    values = {"colour": world.COLOUR_NAMES, "size": world.SIZES, "position": world.POSITIONS}
    n = 7
    probe, cf = rng.normal(size=(50, 5)), rng.normal(size=(14 * n, 5))
    units = profile_units(probe, cf, values, n)
    v = rng.normal(size=5)
    d = profile_directions(probe, cf, np.stack([v, np.eye(5)[3]]), values, n)
    for a in values:  # raw effects combine with the direction's weights; each is divided by its own std
        raw = (units.value_effects[a] * units.scale) @ v
        assert np.allclose(d.value_effects[a][:, 0], raw / (probe @ v).std())
        assert np.array_equal(d.value_effects[a][:, 1], units.value_effects[a][:, 3])  # a basis vector: the unit
    with pytest.raises(DataError, match="blocks"):
        profile_directions(probe, cf[:-1], v[None], values, n)


@pytest.fixture(scope="module")
def causal_run(tiny_run, tmp_path_factory):
    """The causal truth on the tiny run's cache (same subjects and splits), explained by the baselines,
    and both truths prepared again from the cache."""
    from fexbench.harness.driver import run

    env = dataclasses.replace(tiny_run[0], out_dir=tmp_path_factory.mktemp("ct-causal") / "out")
    results = run(["concept-transfer"], list(BASELINES), env, task_configs={"concept-transfer": CAUSAL},
                  log=lambda s: None)
    association = ConceptTransfer(**dict(CAUSAL, truth="association")).prepare(env)
    return env, {r.explainer: r for r in results}, ConceptTransfer(**CAUSAL).prepare(env), association


def test_causal_truth_end_to_end(causal_run):
    env, results, prepared, association = causal_run
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    (a_truth,) = [t for t in association.ground_truth.values() if "targets" in t]
    (c_truth,) = [t for t in results["oracle"].ground_truth.values() if "targets" in t]
    assert "truth" not in a_truth and c_truth["truth"] == "causal" and c_truth["n_causal_scenes"] == 40
    # the same targets and maps; the association concept is recorded beside the causal one
    assert [t["target"] for t in a_truth["targets"]] == [t["target"] for t in c_truth["targets"]]
    assert [t["concept"] for t in a_truth["targets"]] == [t["association_concept"] for t in c_truth["targets"]]
    assert c_truth["r2_heldout"] == a_truth["r2_heldout"]
    # the option is not a no-op: the two ground truths differ (here in one target of 12)
    causal_concepts = [t["concept"] for t in c_truth["targets"]]
    assert causal_concepts != [t["concept"] for t in a_truth["targets"]]
    assert c_truth["truth_agreement"] == pytest.approx(
        np.mean([t["concept"] == t["association_concept"] for t in c_truth["targets"]]))
    # scored against the causal concepts: an explanation naming each one is right in both spaces
    named = {c.subject.name: [Explanation.from_weights(t, {concept: 1.0}) for t, concept in zip(c.targets, causal_concepts)]
             for c in prepared.cases}
    scored = {m.name: m.value for m in ConceptTransfer(**CAUSAL).score(prepared, named).metrics}
    assert scored["direct_top1"] == scored["transfer_top1"] == 1.0
    assert ConceptTransfer(**CAUSAL).score(association, named).metrics[0].value < 1.0

    # measured again without the task's caches: B on the held-out scenes and their counterfactuals
    target_case = prepared.cases[1]
    model, values = target_case.subject.model, LAYOUT_VALUES["imagenet9"]
    scenes = world.imagenet9_scenes(CAUSAL["n_test"], derive_seed(env.seed, "transfer", "test"), 0.0)[0]
    chosen = choose_scenes(len(scenes), CAUSAL["n_causal_scenes"], derive_seed(env.seed, "transfer", "causal-scenes"))
    cf = counterfactual_set(scenes.subset(chosen), values, 32, "check")
    held_out = model.activations(world.render(scenes, 32)[0], ("penultimate",))["penultimate"]
    cf_acts = model.activations(cf.images, ("penultimate",))["penultimate"]
    units = profile_units(held_out, cf_acts, values, len(chosen))
    records = prepared.ground_truth[target_case.subject.name]["targets"]
    assert records == c_truth["targets"]
    for target, record in zip(target_case.targets, records):
        if target.kind == "unit":
            profile, index = units, target.index
        else:
            profile, index = profile_directions(held_out, cf_acts, np.asarray(target.direction)[None], values,
                                                len(chosen)), 0
        effects = profile.effects(index)
        assert record["effects"] == pytest.approx(effects, abs=1e-3)
        ranked = sorted(effects.values(), reverse=True)
        if ranked[0] - ranked[1] > 1e-3:  # a clear top cause: the record's concept is it
            assert record["concept"] == profile.top_cause(index)[1], record["target"]
        assert record["effects"][record["concept"]] == max(record["effects"].values())
