"""Baseline explainers: the floor (random), the label restated (class-name) and the ceiling (oracle).

A task whose oracle does not score near the top, or whose random control does not sit at chance,
is broken; these three rows are how the leaderboard shows that it is not.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fexbench.core.card import MethodCard
from fexbench.core.seeds import derive_seed
from fexbench.core.contract import Context, Explainer, Explanation, Subject, Target


def target_scores(target: Target, context: Context) -> np.ndarray:
    """How strongly each probe image expresses the target: class margin, unit or direction activation."""
    probe = context.probe
    if target.kind == "class":
        logits = probe.logits
        return logits[:, target.index] - np.delete(logits, target.index, axis=1).max(axis=1)
    if target.kind == "unit":
        return probe.features[:, target.index]
    return probe.features @ np.asarray(target.direction, dtype=probe.features.dtype)


class RandomExplainer(Explainer):
    """Control: words drawn uniformly from the concept vocabulary, with random weights."""

    name = "random"
    control = True
    description = "control: random vocabulary words with random weights (scores at chance)"
    card = MethodCard(
        display_name="Random words (control)",
        description="A control, not a method from a paper: for each target it draws distinct words uniformly from "
                    "the task's concept vocabulary (distractors included) and gives them uniform random weights, "
                    "seeded by the explainer seed, the subject and the target. It marks chance on every metric: a "
                    "method that does not significantly beat it has shown nothing, and a task whose random control "
                    "does not sit at chance is broken. Scored over 20 explainer seeds, so that one draw in the tail "
                    "does not stand for the control.",
        note="fexbench's floor; no paper, no external code.")
    stochastic = True
    seeds = 20  # free to run, and one draw of a control lands in its tail 5% of the time

    def __init__(self, n_words: int = 8):
        self.n_words = n_words

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        vocab = sorted(context.vocabulary)
        out = []
        for target in targets:
            seed = derive_seed(context.seed, subject.name, target.key)
            rng = np.random.default_rng(seed)
            words = rng.choice(len(vocab), size=min(self.n_words, len(vocab)), replace=False)
            weights = rng.random(len(words))
            out.append(Explanation.from_weights(target, {vocab[i]: w for i, w in zip(words, weights)}))
        return out


class ClassNameExplainer(Explainer):
    """Restates the label: a class target is explained by its class name, a unit by its most aligned class."""

    name = "class-name"
    control = True
    description = "baseline: names the class only (what restating the label earns)"
    card = MethodCard(
        display_name="Class name (control)",
        description="A control, not a method from a paper: a class target is explained by its own class name, a "
                    "unit or direction by the name of the class whose logit its activation correlates with most "
                    "over the probe images, with weight 1. It measures what restating the label earns: a method "
                    "that does not beat it says nothing about a classifier beyond what its output already says.",
        note="fexbench's label baseline; no paper, no external code.")

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        out = []
        for target in targets:
            if target.kind == "class":
                cls = target.index
            else:
                act = target_scores(target, context)
                corr = [np.corrcoef(act, context.probe.logits[:, c])[0, 1] for c in range(len(subject.class_names))]
                cls = int(np.nanargmax(corr))
            out.append(Explanation.from_weights(target, {subject.class_names[cls]: 1.0}))
        return out


class OracleExplainer(Explainer):
    """Ceiling: reads the ground-truth attributes of the target's top-activating probe images.

    Weight of an attribute value = how much more frequent it is among the top images than in the
    whole probe set (enrichment, clipped at 0), so a value that is everywhere explains nothing.
    """

    name = "oracle"
    description = "ceiling (oracle): enrichment of ground-truth attributes in the target's top probe images"
    is_oracle = True
    card = MethodCard(
        display_name="Oracle (ceiling)",
        description="The ceiling, not a method: the only explainer the harness gives the probe images' ground-truth "
                    "attributes (shape, colour, background, ...). For each target it takes the top 20% of probe "
                    "images by the target's score (class margin, unit activation or direction projection) and "
                    "weighs each attribute value by how much more frequent it is there than in the whole probe set "
                    "(clipped at 0). A task whose oracle does not score near the top is broken; it gets no rank "
                    "among the methods, and its gap to each explainer is reported instead.",
        note="fexbench's ceiling; it reads the ground truth, which no method may.")

    def __init__(self, top_fraction: float = 0.2):
        self.top_fraction = top_fraction

    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        if context.attributes is None:
            raise RuntimeError("the oracle needs ground-truth attributes; the harness gives them only to oracles")
        out = []
        for target in targets:
            scores = target_scores(target, context)
            k = max(1, int(round(self.top_fraction * len(scores))))
            top = np.argsort(-scores, kind="stable")[:k]
            weights: dict[str, float] = {}
            for values in context.attributes.values():
                values = np.asarray(values)
                names, counts_all = np.unique(values, return_counts=True)
                freq_all = dict(zip(names, counts_all / len(values)))
                names_top, counts_top = np.unique(values[top], return_counts=True)
                for value, count in zip(names_top, counts_top):
                    gain = count / k - freq_all[value]
                    if gain > 0:
                        weights[str(value)] = weights.get(str(value), 0.0) + float(gain)
            out.append(Explanation.from_weights(target, weights))
        return out
