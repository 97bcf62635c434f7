"""Task `concept-transfer`: are explanations carried into another model's space by a linear map
still right? After FALCON's transfer of concepts to an unseen representation space (Kalibhat et
al., ICML 2023), where a simple linear map lets an explained space A explain a new space B.

Two subjects of the ImageNet-9 layout, trained on the same data: A (the source space, a zoo
subject) and B (another seed and width). On a fitting split of images, ridge maps between their
penultimate features are fitted (alpha by efficient leave-one-out over a grid, sklearn RidgeCV);
their R^2 on held-out images is recorded, B -> A as the issue asks and A -> B, the one that carries
directions. B's targets are its highest-variance units and its top principal directions. Each is
explained twice: direct (on B's own features) and transferred (in A, along the direction whose
activation best reproduces the target's: the ridge readout of the target from A's features, which
is the A -> B map's transpose applied to the direction).

Why not push the direction through the B -> A map (M v)? A unit is a readout (a linear functional),
not a displacement: M v says where A's features move when b moves along v, not which direction of
A reads out the same signal. On the default pair, the activations along M v correlate 0.47 on
average with the target's on held-out images (-0.65 for one unit), the readout's 0.85 (README);
explaining M v would score the map's flaw, not the explainer.

Ground truth concept of a target: the world attribute value (one of 9 shapes, 8 colours, 2 sizes,
9 backgrounds) whose presence best separates the target's activations in B, by AUROC, measured
on held-out images whose attributes are mutually independent (p_native = 0), so no concept is
confounded with another. That is the default, `truth = "association"`.

`truth = "causal"` scores the same targets and explanations against a causal ground truth instead:
the target's top cause as the task `unit-causes` measures it (fexbench.models.unit_effects).
`n_causal_scenes` (200) of the held-out scenes, chosen with a seed, are re-rendered once per value
of each attribute of the layout (9 shapes, 8 colours, 2 sizes, 9 backgrounds, 4 positions: 32
blocks), and B is read on them (forward passes only, images and activations cached). A target's
activation is linear in B's features (b . v, a unit being a basis vector), so its profile is that of
the projections: value effect e(a, x) = mean over scenes of [activation with a set to x minus its
mean over a's other values], in units of the target's std on the held-out set. The ground-truth
concept is the nameable value with the largest effect (positions have no words): for a unit
exactly unit-causes' top cause. This is the most faithful mapping of the association's "value whose
presence best raises the activation" (AUROC, scale free) onto interventions ("value whose setting
raises it most", in the target's std, comparable across attributes). Everything else is unchanged:
targets (directions keep the sign chosen on the fitting split), explanations, scoring and metrics.
With the default truth, config() leaves out the two options, so earlier results keep their job keys.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from fexbench.data import world
from fexbench.core.seeds import derive_seed
from fexbench.data.concepts import content_words, hit_at_k
from fexbench.core.contract import Explanation, Prepared, Scored, Target, Task
from fexbench.core.metrics import Estimate, Metric, auroc, finite_count, nanmean
from fexbench.models.subjects import cached_activations
from fexbench.models.unit_effects import LAYOUT_VALUES, cached_counterfactuals, choose_scenes, profile_directions
from fexbench.data.concepts import concept_shares
from fexbench.tasks.imagenet9_zoo import CLASS_NAMES, IMAGENET9_TASK_OPTIONS, ORACLE_FIELDS, ImageNet9Zoo
from fexbench.data.world_concepts import world_vocabulary

# The concepts a target's ground truth can be: every attribute value of the world.
ATTRIBUTE_VALUES = (*world.SHAPES, *world.COLOUR_NAMES, *world.SIZES, *world.BACKGROUNDS)
AGREEMENT_K = 5
TRUTHS = ("association", "causal")


def _agreement_chance(n_words: int, k: int = AGREEMENT_K) -> float:
    """E[Jaccard] of two independent uniform k-word subsets of an n-word vocabulary (hypergeometric)."""
    overlap = stats.hypergeom(n_words, k, k)
    return float(sum(overlap.pmf(i) * i / (2 * k - i) for i in range(k + 1)))


_N_VOCAB = len(world_vocabulary(CLASS_NAMES).words())
TRANSFER_TOP1 = Metric("transfer_top1", "transferred explanation's top concept is the target's measured concept",
                       True, (0.0, 1.0), "transfer", chance=1 / len(ATTRIBUTE_VALUES))
TRANSFER_TOP3 = Metric("transfer_top3", "measured concept among the transferred explanation's top 3 concepts",
                       True, (0.0, 1.0), "transfer", chance=3 / len(ATTRIBUTE_VALUES))
DIRECT_TOP1 = Metric("direct_top1", "direct explanation (in the target space) top concept is the measured one",
                     True, (0.0, 1.0), "accuracy", chance=1 / len(ATTRIBUTE_VALUES))
DIRECT_TOP3 = Metric("direct_top3", "measured concept among the direct explanation's top 3 concepts",
                     True, (0.0, 1.0), "accuracy", chance=3 / len(ATTRIBUTE_VALUES))
AGREEMENT = Metric("agreement_jaccard", f"Jaccard of the top-{AGREEMENT_K} words of transferred and direct explanations",
                   True, (0.0, 1.0), "consistency", chance=_agreement_chance(_N_VOCAB))


# ---------------------------------------------------------------- the linear map

@dataclass(frozen=True, eq=False)
class LinearMap:
    """y ~ coef @ x + intercept, from one feature space (D_x) to another (D_y)."""

    coef: np.ndarray  # (D_y, D_x)
    intercept: np.ndarray  # (D_y,)
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef.T + self.intercept

    def r2(self, x: np.ndarray, y: np.ndarray) -> float:
        """Variance-weighted R^2 over y's dimensions (a dead unit, with no variance, weighs nothing)."""
        return float(r2_score(y, self.predict(x), multioutput="variance_weighted"))

    def readout(self, direction_y: np.ndarray) -> np.ndarray:
        """The direction u of x's space with u . x ~ direction_y . y: the ridge readout of that direction
        of y from x (by linearity, regressing y . v on x gives coef.T v)."""
        return self.coef.T @ np.asarray(direction_y, dtype=np.float64)


def fit_linear_map(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = tuple(np.logspace(-3, 3, 13))) -> LinearMap:
    """Ridge regression of y's features on x's, one alpha for all outputs chosen by efficient
    leave-one-out (RidgeCV)."""
    ridge = RidgeCV(alphas=tuple(alphas)).fit(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return LinearMap(np.atleast_2d(ridge.coef_), np.atleast_1d(ridge.intercept_), float(ridge.alpha_))


# ---------------------------------------------------------------- ground truth

def concept_aurocs(activation: np.ndarray, attributes: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """AUROC of the activation for the presence of each attribute value (present in some, not all, images)."""
    activation = np.asarray(activation, np.float64)
    out = {}
    for values in attributes.values():
        values = np.asarray(values)
        for value in np.unique(values):
            present = values == value
            if present.any() and not present.all():
                out[str(value)] = auroc(activation, present)
    return out


def best_concept(activation: np.ndarray, attributes: Mapping[str, Sequence[str]]) -> tuple[str, float]:
    """The attribute value whose presence best separates the activations (highest AUROC), and that AUROC."""
    aurocs = concept_aurocs(activation, attributes)
    value = max(sorted(aurocs), key=lambda v: aurocs[v])
    return value, aurocs[value]


# ---------------------------------------------------------------- scoring helpers



def top_words(explanation: Explanation, k: int = AGREEMENT_K) -> set[str]:
    """The top k words, lemmatised (so "Waves" and "wave" agree)."""
    return {" ".join(content_words(w)) or w.lower() for w in explanation.words(k)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else float("nan")


def wilson_ci(hits: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for an accuracy over targets (tie credits make a hit fractional).

    Used instead of the percentile bootstrap for the top-k accuracies: with few targets and rare
    hits (a chance-level explainer hits 1 in 28) the bootstrap of 0 hits is [0, 0], which claims a
    certainty that 16 or 24 targets cannot give; Wilson's interval stays honest near 0 and 1.
    """
    hits = np.asarray(hits, float)
    if hits.ndim == 2:  # (explainer seeds, targets): each target's hit averaged over the seeds
        hits = nanmean(hits, axis=0) if hits.shape[1] else hits[0]
    hits = hits[np.isfinite(hits)]
    n = len(hits)
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(hits.mean())
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------- the task

def _attributes(data: Any) -> dict[str, np.ndarray]:
    """Per image, the name of each attribute value (shape, colour, size, background)."""
    return {f: np.asarray(data.metadata_values[f])[data.field(f)] for f in ORACLE_FIELDS}


class ConceptTransfer(Task):
    name = "concept-transfer"
    description = "FALCON-style transfer: explanations of another model's units carried over by a ridge map"
    metrics = (TRANSFER_TOP1, TRANSFER_TOP3, DIRECT_TOP1, DIRECT_TOP3, AGREEMENT)
    # 2: words matched through the part-of-speech lemmatiser
    # 3: the ImageNet-9 zoo's initialisation seeds derived from each replicate's seed (docs/subjects.md)
    version = 3
    resolution_targets = {"default": 0.2, "full": 0.1}  # docs/statistics.md#designs

    def __init__(self, p_native: float = 0.5, source_seed: int = 0, target_seed: int = 1, target_width: int = 24,
                 n_units: int = 12, n_directions: int = 12, n_fit: int = 2000, n_test: int = 1000,
                 alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 3, 13)), n_bootstrap: int = 1000,
                 imagenet9: Mapping[str, Any] | None = None,
                 truth: Literal["association", "causal"] = "association", n_causal_scenes: int = 200):
        if truth not in TRUTHS:
            raise ValueError(f"concept-transfer: truth must be one of {TRUTHS}, not {truth!r}")
        if n_causal_scenes < 2:
            raise ValueError(f"concept-transfer: n_causal_scenes must be at least 2, got {n_causal_scenes}")
        self.truth, self.n_causal_scenes = truth, n_causal_scenes
        self.p_native, self.source_seed, self.target_seed, self.target_width = p_native, source_seed, target_seed, target_width
        self.n_units, self.n_directions, self.n_fit, self.n_test = n_units, n_directions, n_fit, n_test
        self.alphas, self.n_bootstrap = tuple(alphas), n_bootstrap
        self.imagenet9 = dict(imagenet9 or {})  # ImageNet9Background arguments: same world, same cached subjects

    def config(self) -> dict[str, Any]:
        """The arguments; with the default (association) truth, without the causal options, so that
        results computed before they existed keep their job keys (the default's numbers are unchanged)."""
        out = super().config()
        if self.truth == "association":
            del out["truth"], out["n_causal_scenes"]
        return out

    def causal_profiles(self, env: Any, test: Any, target: Any, b_test: np.ndarray,
                        directions: np.ndarray) -> tuple[Any, np.ndarray, Any]:
        """The causal profiles of B's targets (`directions`, (T, D), a unit as its basis vector),
        measured on `n_causal_scenes` held-out scenes; returns (profiles, chosen scenes, counterfactual set)."""
        seed = derive_seed(env.seed, "transfer", "test")  # the held-out set's seed (prepare)
        scenes = world.imagenet9_scenes(self.n_test, seed, 0.0)[0]
        chosen = choose_scenes(len(scenes), self.n_causal_scenes, derive_seed(env.seed, "transfer", "causal-scenes"))
        values = LAYOUT_VALUES["imagenet9"]
        cf = cached_counterfactuals(env.cache_dir, "concept-transfer-counterfactuals", "imagenet9", test, scenes,
                                    chosen, values, "transfer-test-counterfactuals", self.name)
        b_cf = cached_activations(env.arrays, target, cf, ("penultimate",), progress=env.progress)["penultimate"]
        return profile_directions(b_test, b_cf, directions, values, len(chosen)), chosen, cf

    def subject_names(self) -> tuple[str, ...]:
        """The names of the subjects `prepare` gives, from the options alone (no data read, nothing
        trained): `fexbench explain` checks --subject against them first."""
        in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
        return (f"source:{in9.subject_name(self.p_native, self.source_seed)}",
                f"target:{in9.subject_name(self.p_native, self.target_seed, width=self.target_width)}")

    def prepare(self, env: Any) -> Prepared:
        in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
        probe = in9.probe_set(env)
        fit = in9.world_set(env, "transfer-fit", self.n_fit, derive_seed(env.seed, "transfer", "fit"), 0.0)
        test = in9.world_set(env, "transfer-test", self.n_test, derive_seed(env.seed, "transfer", "test"), 0.0)
        in9.prebuild(env, [(self.p_native, self.source_seed, None), (self.p_native, self.target_seed, self.target_width)])
        source = in9.subject(env, self.p_native, self.source_seed)
        target = in9.subject(env, self.p_native, self.target_seed, width=self.target_width)

        def feats(subject: Any, data: Any) -> np.ndarray:
            return cached_activations(env.arrays, subject, data, progress=env.progress)["penultimate"].astype(np.float64)

        a_fit, b_fit, a_test, b_test = feats(source, fit), feats(target, fit), feats(source, test), feats(target, test)
        b_to_a = fit_linear_map(b_fit, a_fit, self.alphas)  # reported: how much of A is linear in B
        a_to_b = fit_linear_map(a_fit, b_fit, self.alphas)  # carries B's directions into A
        fit_attrs, test_attrs = _attributes(fit), _attributes(test)

        direct, transferred = [], []
        variance = b_fit.var(axis=0)
        for unit in sorted(np.argsort(-variance, kind="stable")[:self.n_units]):
            if variance[unit] <= 0:
                continue  # a dead unit has no concept
            direct.append(Target("unit", int(unit), f"unit{unit}"))
            transferred.append(np.eye(b_fit.shape[1])[unit])
        pca = PCA(n_components=self.n_directions, random_state=0).fit(b_fit)
        for i, v in enumerate(pca.components_):
            # a principal direction has no sign; orient it so that its high end is the more
            # concept-specific one, judged on the FITTING split (the truth is measured on the test split)
            if best_concept(b_fit @ -v, fit_attrs)[1] > best_concept(b_fit @ v, fit_attrs)[1]:
                v = -v
            direct.append(Target("direction", i, f"pc{i}", direction=tuple(float(x) for x in v)))
            transferred.append(v)
        truth_targets = []
        for t, v in zip(direct, transferred):
            b_act = b_test @ v
            concept, auc = best_concept(b_act, test_attrs)
            v_a = a_to_b.readout(v)
            fidelity = float(np.corrcoef(a_test @ v_a, b_act)[0, 1]) if np.ptp(a_test @ v_a) > 0 else 0.0
            truth_targets.append({"target": t.name, "concept": concept, "auroc": auc, "transfer_fidelity": fidelity})
        causal: dict[str, Any] = {}
        if self.truth == "causal":
            profiles, chosen, cf = self.causal_profiles(env, test, target, b_test, np.stack(transferred))
            for i, gt in enumerate(truth_targets):
                attribute, value, effect = profiles.top_cause(i)
                gt.update({"concept": value, "concept_attribute": attribute, "top_effect": round(effect, 4),
                           "association_concept": gt["concept"],
                           "attribute_shares": {a: round(x, 4) for a, x in profiles.shares(i).items()},
                           "effects": {v: round(e, 4) for v, e in profiles.effects(i).items()}})
            same = [gt["concept"] == gt["association_concept"] for gt in truth_targets]
            causal = {"truth": "causal", "n_causal_scenes": len(chosen),
                      "truth_agreement": float(np.mean(same)) if same else float("nan")}
        a_targets = tuple(Target("direction", i, f"{t.name}->A", direction=tuple(float(x) for x in a_to_b.readout(v)))
                          for i, (t, v) in enumerate(zip(direct, transferred)))

        source = dataclasses.replace(source, name=f"source:{source.name}")
        target = dataclasses.replace(target, name=f"target:{target.name}")
        cases = (in9.case(env, source, probe, a_targets), in9.case(env, target, probe, tuple(direct)))
        truth = {
            source.name: {"role": "source (A): explains B's targets transferred by the ridge map"},
            target.name: {"role": "target (B): explained directly",
                          "r2_heldout": a_to_b.r2(a_test, b_test), "r2_fit": a_to_b.r2(a_fit, b_fit),
                          "ridge_alpha": a_to_b.alpha, "r2_heldout_b_to_a": b_to_a.r2(b_test, a_test),
                          "ridge_alpha_b_to_a": b_to_a.alpha, **causal, "targets": truth_targets},
        }
        hashes = {"probe": probe.content_hash, "fit": fit.content_hash, "test": test.content_hash,
                  f"weights:{source.name}": source.weights_hash, f"weights:{target.name}": target.weights_hash}
        if self.truth == "causal":
            hashes["counterfactuals"] = cf.content_hash
        return Prepared(cases, truth, hashes, seed=env.seed)

    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        vocab = world_vocabulary(CLASS_NAMES)
        source, target = (c.subject.name for c in prepared.cases)
        truth = prepared.ground_truth[target]["targets"]
        rows = {"t1": [], "t3": [], "d1": [], "d3": [], "agree": []}
        per_target = []
        for gt, t_exp, d_exp in zip(truth, explanations[source], explanations[target]):
            t_shares, d_shares = concept_shares(vocab, t_exp, ATTRIBUTE_VALUES), concept_shares(vocab, d_exp, ATTRIBUTE_VALUES)
            row = {"t1": hit_at_k(t_shares, gt["concept"], 1), "t3": hit_at_k(t_shares, gt["concept"], 3),
                   "d1": hit_at_k(d_shares, gt["concept"], 1), "d3": hit_at_k(d_shares, gt["concept"], 3),
                   "agree": jaccard(top_words(t_exp), top_words(d_exp))}
            for key, value in row.items():
                rows[key].append(value)
            per_target.append({"target": gt["target"], "concept": gt["concept"], **row,
                               "transferred_words": t_exp.words(5), "direct_words": d_exp.words(5)})
        boot = dict(n_resamples=self.n_bootstrap, seed=prepared.seed)
        estimates = tuple(Estimate(metric, nanmean, (np.asarray(rows[key], float),), count=finite_count,
                                   interval=None if metric is AGREEMENT else wilson_ci, **boot)
                          for metric, key in ((TRANSFER_TOP1, "t1"), (TRANSFER_TOP3, "t3"), (DIRECT_TOP1, "d1"),
                                              (DIRECT_TOP3, "d3"), (AGREEMENT, "agree")))
        per_subject = {target: {"r2_heldout": prepared.ground_truth[target]["r2_heldout"], "targets": per_target}}
        return Scored.of(estimates, per_subject)
