"""concept-transfer: the ridge map, the measured concept of a unit, the scoring, and the task end to end."""
import numpy as np
import pytest

from fexbench.core.contract import Case, Context, Explanation, Prepared, Probe, Subject, Target
from fexbench.tasks.concept_transfer import (AGREEMENT, ATTRIBUTE_VALUES, ConceptTransfer, best_concept, fit_linear_map,
                                          hit_at_k, jaccard, top_words, wilson_ci)
from fexbench.data.concepts import concept_shares
from fexbench.data.world_concepts import world_vocabulary
from fexbench.data import world
from conftest import run_baselines


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
