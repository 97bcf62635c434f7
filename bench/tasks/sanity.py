"""Sanity check `sanity-randomization`: does the explanation change when the model's weights are
randomised? After Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018): an explanation
that survives re-initialising the model does not explain the model.

Subject: the ImageNet-9 zoo's subject trained at `p_native` (default 1.0: the challenge's
`original` training data). Copies: cascading re-initialisation from the top (head, then hidden,
block3, block2, block1; the last stage is the fully random model, see fexbench.models.randomization) and an
identical copy under another name. Every case explains the same nine class targets on the same
probe images. Similarity of two explanations = weighted Jaccard of their word weights (each
normalised to sum 1): sum_w min(p_w, q_w) / sum_w max(p_w, q_w); 1 for identical explanations, 0
for disjoint ones; cosine is reported too. Lower similarity to the randomised copies is better.

The identical copy measures consistency: an explainer whose output is noise (e.g. `random`, whose
draws are seeded by the subject's name) scores low on the randomised copies for no good reason,
and its self-similarity, as low, shows it. Passing this check is necessary, not sufficient.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from fexbench.data.concepts import content_words
from fexbench.core.contract import Explanation, Prepared, Scored, Target, Task
from fexbench.core.metrics import Estimate, Metric, finite_count, nanmean
from fexbench.models.randomization import SMALL_CNN_CASCADE, cascade_stages, covers_all, randomised_subject
from fexbench.models.subjects import cached_activations
from fexbench.tasks.imagenet9_zoo import CLASS_NAMES, IMAGENET9_TASK_OPTIONS, ImageNet9Zoo

SIMILARITY = Metric("similarity_randomized", "weighted Jaccard of word weights, trained vs randomised copies "
                    "(every cascade stage), mean over targets", False, (0.0, 1.0), "sanity")
SIMILARITY_FULL = Metric("similarity_full", "weighted Jaccard, trained vs fully randomised model", False, (0.0, 1.0), "sanity")
COSINE = Metric("cosine_randomized", "cosine of word-weight vectors, trained vs randomised copies, mean", False,
                (0.0, 1.0), "sanity")
SELF_SIMILARITY = Metric("self_similarity", "weighted Jaccard, trained vs an identical copy under another name "
                         "(consistency; low means the explanation is noise)", True, (0.0, 1.0), "consistency")

TRAINED, COPY = "trained", "copy"


def word_weights(explanation: Explanation) -> dict[str, float]:
    """Word -> weight, words lemmatised (so "Waves" and "wave" are one word), normalised to sum 1."""
    out: dict[str, float] = {}
    for word, weight in explanation.concepts:
        key = " ".join(content_words(word)) or word.lower()
        out[key] = out.get(key, 0.0) + float(weight)
    total = sum(out.values())
    return {k: v / total for k, v in out.items()} if total > 0 else {}


def weighted_jaccard(a: Explanation, b: Explanation) -> float:
    """Ruzicka similarity of normalised word weights; NaN when both explanations are empty."""
    p, q = word_weights(a), word_weights(b)
    words = sorted(set(p) | set(q))  # a fixed summation order: the same numbers in every process
    if not words:
        return float("nan")
    return sum(min(p.get(w, 0.0), q.get(w, 0.0)) for w in words) / sum(max(p.get(w, 0.0), q.get(w, 0.0)) for w in words)


def cosine(a: Explanation, b: Explanation) -> float:
    p, q = word_weights(a), word_weights(b)
    if not p and not q:
        return float("nan")
    norm = math.sqrt(sum(v * v for v in p.values()) * sum(v * v for v in q.values()))
    return sum(v * q.get(w, 0.0) for w, v in p.items()) / norm if norm > 0 else 0.0


class SanityRandomization(Task):
    name = "sanity-randomization"
    description = "sanity check (Adebayo et al.): similarity of explanations of a trained vs a randomised model"
    metrics = (SIMILARITY, SIMILARITY_FULL, COSINE, SELF_SIMILARITY)
    # 2: words lemmatised by the part-of-speech lemmatiser
    # 3: the ImageNet-9 zoo's initialisation seeds derived from each replicate's seed (docs/subjects.md)
    version = 3
    resolution_targets = {"default": 0.05, "full": 0.03}  # docs/statistics.md#designs

    def __init__(self, p_native: float = 1.0, seed: int = 0, cascade: tuple[str, ...] = SMALL_CNN_CASCADE,
                 n_bootstrap: int = 1000, imagenet9: Mapping[str, Any] | None = None):
        self.p_native, self.seed, self.cascade, self.n_bootstrap = p_native, seed, tuple(cascade), n_bootstrap
        self.imagenet9 = dict(imagenet9 or {})

    def subject_names(self) -> tuple[str, ...]:
        """The names of the subjects `prepare` gives, from the options alone (no data read, nothing
        trained): `fexbench explain` checks --subject against them first."""
        from fexbench.models.subjects import SmallCNN

        in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
        base = in9.subject_name(self.p_native, self.seed)
        module = SmallCNN(len(CLASS_NAMES), in9.width)  # untrained: only its parameter names are read
        stages = ["full" if covers_all(module, modules) else f"cascade-{modules[-1]}"
                  for modules in cascade_stages(self.cascade)]
        return tuple(f"{base}/{stage}" for stage in (TRAINED, COPY, *stages))

    def prepare(self, env: Any) -> Prepared:
        in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
        probe, test = in9.probe_set(env), in9.test_sets(env)["original"]
        trained = in9.subject(env, self.p_native, self.seed)
        targets = tuple(Target("class", i, name) for i, name in enumerate(CLASS_NAMES))
        base = trained.name
        subjects = [(TRAINED, (), dataclasses.replace(trained, name=f"{base}/{TRAINED}")),
                    (COPY, (), dataclasses.replace(trained, name=f"{base}/{COPY}"))]
        for modules in cascade_stages(self.cascade):
            stage = "full" if covers_all(trained.model.module, modules) else f"cascade-{modules[-1]}"
            subjects.append((stage, modules, randomised_subject(trained, modules, self.seed, f"{base}/{stage}")))

        def predict(subject: Any, data: Any) -> np.ndarray:
            return cached_activations(env.arrays, subject, data, ("logits",))["logits"].argmax(1)

        trained_probe = predict(trained, probe)
        cases, truth = [], {}
        hashes = {"probe": probe.content_hash, "test:original": test.content_hash}
        for stage, modules, subject in subjects:
            hashes[f"weights:{subject.name}"] = subject.weights_hash
            truth[subject.name] = {"stage": stage, "randomised_modules": list(modules),
                                   "accuracy_original": float((predict(subject, test) == test.labels).mean()),
                                   "prediction_agreement_with_trained": float((predict(subject, probe) == trained_probe).mean())}
            cases.append(in9.case(env, subject, probe, targets))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        names = {prepared.ground_truth[c.subject.name]["stage"]: c.subject.name for c in prepared.cases}
        trained = explanations[names[TRAINED]]
        random_stages = [s for s in names if s not in (TRAINED, COPY)]
        jac = {s: [weighted_jaccard(a, b) for a, b in zip(trained, explanations[names[s]])] for s in names if s != TRAINED}
        cos = {s: [cosine(a, b) for a, b in zip(trained, explanations[names[s]])] for s in random_stages}
        per_target_jac = np.nanmean(np.array([jac[s] for s in random_stages], float), axis=0) \
            if random_stages else np.array([])
        per_target_cos = np.nanmean(np.array([cos[s] for s in random_stages], float), axis=0) \
            if random_stages else np.array([])
        columns = [(SIMILARITY, per_target_jac), (SIMILARITY_FULL, np.asarray(jac.get("full", []), float)),
                   (COSINE, per_target_cos), (SELF_SIMILARITY, np.asarray(jac[COPY], float))]
        boot = dict(n_resamples=self.n_bootstrap, seed=prepared.seed)
        estimates = tuple(Estimate(m, nanmean, (np.asarray(col, float),), count=finite_count, **boot) for m, col in columns)
        per_subject = {names[s]: {"stage": s, "weighted_jaccard_per_target": jac[s],
                                  "mean_weighted_jaccard": nanmean(jac[s]),
                                  **({"cosine_per_target": cos[s]} if s in cos else {}),
                                  "top_words": [e.words(5) for e in explanations[names[s]]]}
                       for s in jac}
        per_subject[names[TRAINED]] = {"stage": TRAINED, "top_words": [e.words(5) for e in trained]}
        return Scored.of(estimates, per_subject)
