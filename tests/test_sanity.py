"""sanity-randomization: randomised copies really have new weights; the similarity is 1 for identical
explanations and 0 for disjoint ones; end to end, class-name (model-blind) scores 1, the oracle lower."""
import numpy as np
import pytest
import torch

from fexbench.core.contract import Explanation, Subject, Target
from fexbench.models.randomization import SMALL_CNN_CASCADE, cascade_stages, covers_all, randomised_subject, state_hash
from fexbench.models.subjects import SmallCNN, small_cnn_classifier
from fexbench.tasks.sanity import cosine, weighted_jaccard, word_weights
from conftest import run_baselines


def _trained() -> Subject:
    torch.manual_seed(0)
    module = SmallCNN(9, width=8, hidden=16)
    with torch.no_grad():  # stand-in for training: move every parameter away from its initialisation
        for p in [*module.parameters(), *(b for b in module.buffers() if b.is_floating_point())]:
            p.add_(0.5)
    return Subject("s", small_cnn_classifier(module), tuple("abcdefghi"), state_hash(module))


def test_randomised_subject_has_new_weights_where_and_only_where_asked():
    trained = _trained()
    before = {k: v.clone() for k, v in trained.model.module.state_dict().items()}
    stages = cascade_stages(SMALL_CNN_CASCADE)
    assert stages[0] == ("head",) and stages[-1] == SMALL_CNN_CASCADE
    hashes = {trained.weights_hash}
    for modules in stages:
        copy = randomised_subject(trained, modules, seed=3, name="r")
        after = copy.model.module.state_dict()
        for key, value in after.items():
            randomised = key.split(".")[0] in modules
            if key.endswith("num_batches_tracked"):
                continue
            assert torch.equal(value, before[key]) != randomised, key
        hashes.add(copy.weights_hash)
        assert copy.weights_hash == state_hash(copy.model.module)
    assert len(hashes) == len(stages) + 1  # every copy is a different model, and none is the trained one
    # the trained subject is untouched, and the same seed gives the same random weights
    assert all(torch.equal(v, before[k]) for k, v in trained.model.module.state_dict().items())
    assert randomised_subject(trained, ("head",), 3, "x").weights_hash == randomised_subject(trained, ("head",), 3, "y").weights_hash
    assert randomised_subject(trained, ("head",), 4, "x").weights_hash != randomised_subject(trained, ("head",), 3, "y").weights_hash
    assert covers_all(trained.model.module, SMALL_CNN_CASCADE) and not covers_all(trained.model.module, ("head",))
    # a cascade stage keeps the random weights of the stages above it
    head1 = randomised_subject(trained, ("head",), 3, "a").model.module.head.weight
    head2 = randomised_subject(trained, ("head", "hidden"), 3, "b").model.module.head.weight
    assert torch.equal(head1, head2)
    with pytest.raises(KeyError, match="no module"):
        randomised_subject(trained, ("nope",), 0, "z")


def test_randomised_model_computes_something_else():
    trained = _trained()
    x = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    full = randomised_subject(trained, SMALL_CNN_CASCADE, 0, "full")
    a = trained.model.activations(x)["logits"]
    b = full.model.activations(x)["logits"]
    assert not np.allclose(a, b)


def test_similarity_is_one_for_identical_and_zero_for_disjoint():
    t = Target("class", 0)
    e = Explanation.from_weights(t, {"lava": 2.0, "star": 1.0})
    assert weighted_jaccard(e, e) == 1.0 and cosine(e, e) == pytest.approx(1.0)
    assert weighted_jaccard(e, Explanation.from_weights(t, {"Lava": 4.0, "stars": 2.0})) == pytest.approx(1.0)  # scale, case, plural
    other = Explanation.from_weights(t, {"snow": 1.0, "red": 3.0})
    assert weighted_jaccard(e, other) == 0.0 and cosine(e, other) == 0.0
    half = Explanation.from_weights(t, {"lava": 1.0, "snow": 1.0})
    # p = (lava 2/3, star 1/3), q = (lava 1/2, snow 1/2): min sum 1/2, max sum 2/3 + 1/3 + 1/2
    assert weighted_jaccard(e, half) == pytest.approx(0.5 / 1.5)
    assert np.isnan(weighted_jaccard(Explanation(t, ()), Explanation(t, ())))
    assert weighted_jaccard(e, Explanation(t, ())) == 0.0
    assert sum(word_weights(e).values()) == pytest.approx(1.0)


TINY = dict(n_bootstrap=200, imagenet9=dict(p_natives=(1.0,), n_train=900, n_probe=270, n_test=450, epochs=4, width=8))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_baselines(tmp_path_factory.mktemp("sanity"), "sanity-randomization", TINY)


def test_sanity_end_to_end(tiny_run):
    _, results = tiny_run
    assert all(r.status == "ok" for r in results.values()), [r.error for r in results.values()]
    truth = results["oracle"].ground_truth
    stages = {t["stage"]: t for t in truth.values()}
    assert set(stages) == {"trained", "copy", "cascade-head", "cascade-hidden", "cascade-block3", "cascade-block2", "full"}
    assert len({h for k, h in results["oracle"].hashes.items() if k.startswith("weights:")}) == 6  # the copy shares weights
    assert stages["full"]["accuracy_original"] < 0.4 < stages["trained"]["accuracy_original"]
    name = results["class-name"]
    assert name.metric("similarity_randomized").value == 1.0 and name.metric("self_similarity").value == 1.0
    oracle = results["oracle"]
    assert oracle.metric("self_similarity").value == 1.0
    assert oracle.metric("similarity_full").value < 0.6
    assert results["random"].metric("self_similarity").value < 0.3  # noise: low on every pair
