"""Task `waterbirds-spurious`: does an explanation name the background a classifier really leans on,
in proportion to how much it leans on it?

A zoo of CNNs is trained on the waterbirds-style world at spurious strengths rho (P[place = label]).
Reliance is MEASURED per subject by exact counterfactuals: the share of balanced-test predictions
that flip when only the background is swapped to the other group. Group accuracies (average, worst
group, gap) are measured too. Explainers explain each class of each subject; the background score
of an explanation is the share of its weight on background concepts.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from bench import world
from bench.cache import stable_hash
from bench.contract import Case, Context, Explanation, Prepared, Probe, Scored, Target, Task
from bench.data import ImageSet, cached_imageset
from bench.metrics import Metric, MetricValue, auroc, bootstrap_ci, nanmean, spearman
from bench.subjects import TrainConfig, cached_activations, load_or_train
from bench.world_concepts import world_vocabulary

CLASS_NAMES = ("angular", "round")
PLACES = ("land", "water")
ORACLE_FIELDS = ("shape", "colour", "size", "background", "place")

SPEARMAN = Metric("spearman_reliance", "Spearman(background score, measured flip rate) across subjects",
                  True, (-1.0, 1.0), "faithfulness", chance=0.0)
AUROC = Metric("auroc_biased", "AUROC of background score for biased vs unbiased subjects",
               True, (0.0, 1.0), "detection", chance=0.5)
CORRECT_BG = Metric("correct_background", "biased subjects: named background is the one correlated with the class",
                    True, (0.0, 1.0), "specificity", chance=0.5)


def _seed(*parts: Any) -> int:
    return int(stable_hash(list(parts), 8), 16)


class WaterbirdsSpurious(Task):
    name = "waterbirds-spurious"
    description = "spurious-correlation detection: explanations vs counterfactually measured background reliance"
    metrics = (SPEARMAN, AUROC, CORRECT_BG)

    def __init__(self, rhos: tuple[float, ...] = (0.5, 0.75, 0.9, 0.95, 0.97, 0.99, 0.995),
                 seeds: tuple[int, ...] = (0, 1), n_train: int = 4000, n_probe: int = 800, n_test: int = 1200,
                 epochs: int = 8, width: int = 16, image_size: int = 32, bias_threshold: float = 0.3,
                 n_bootstrap: int = 1000):
        self.rhos, self.seeds = tuple(rhos), tuple(seeds)
        self.n_train, self.n_probe, self.n_test = n_train, n_probe, n_test
        self.epochs, self.width, self.image_size = epochs, width, image_size
        self.bias_threshold, self.n_bootstrap = bias_threshold, n_bootstrap

    # -- data ---------------------------------------------------------------------------------
    def _world(self, env: Any, split: str, n: int, rho: float, seed: int, swap: bool = False) -> ImageSet:
        key = {"layout": "waterbirds", "split": split, "n": n, "rho": rho, "seed": seed, "swap": swap,
               "size": self.image_size, "world": world.VERSION}

        def build() -> ImageSet:
            scenes, labels, place = world.waterbirds_scenes(n, rho, seed, balanced=(split != "train"))
            if swap:
                scenes, place = world.swap_place(scenes, place, _seed(seed, "swap")), 1 - place
            return world.scenes_to_imageset(scenes, labels, CLASS_NAMES, f"waterbirds-{split}{'-swapped' if swap else ''}",
                                            self.image_size, seed, extra_metadata={"place": (place, PLACES)})

        return cached_imageset(env.cache_dir, key, build)

    def prepare(self, env: Any) -> Prepared:
        test = self._world(env, "test", self.n_test, 0.5, _seed(env.seed, "test"))
        test_cf = self._world(env, "test", self.n_test, 0.5, _seed(env.seed, "test"), swap=True)
        probe = self._world(env, "probe", self.n_probe, 0.5, _seed(env.seed, "probe"))
        vocab = world_vocabulary(CLASS_NAMES)
        attributes = {f: tuple(probe.metadata_values[f][c] for c in probe.field(f)) for f in ORACLE_FIELDS}
        targets = tuple(Target("class", i, name) for i, name in enumerate(CLASS_NAMES))
        cases, truth = [], {}
        hashes = {"test": test.content_hash, "test_swapped": test_cf.content_hash, "probe": probe.content_hash}
        for rho in self.rhos:
            for seed in self.seeds:
                name = f"cnn-rho{rho:g}-s{seed}"
                data_seed = _seed(env.seed, "train", rho, seed)
                subject = load_or_train(
                    env.cache_dir, name,
                    TrainConfig(n_classes=2, width=self.width, epochs=self.epochs, seed=seed), CLASS_NAMES,
                    lambda: self._world(env, "train", self.n_train, rho, data_seed),
                    {"layout": "waterbirds", "n": self.n_train, "rho": rho, "seed": data_seed,
                     "size": self.image_size, "world": world.VERSION}, progress=env.progress)
                hashes[f"weights:{name}"] = subject.weights_hash
                truth[name] = {"rho": rho, "seed": seed, **self._measure(env, subject, test, test_cf)}
                acts = cached_activations(env.arrays, subject, probe)
                context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                                  vocabulary=tuple(vocab.words()), resources=env.resources, seed=env.seed, device=env.device,
                                  cache_dir=env.cache_dir)
                cases.append(Case(subject, context, targets, oracle_attributes=attributes))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    def _measure(self, env: Any, subject: Any, test: ImageSet, test_cf: ImageSet) -> dict[str, Any]:
        """Ground truth from the model's behaviour: counterfactual flip rate and group accuracies."""
        pred = cached_activations(env.arrays, subject, test, ("logits",))["logits"].argmax(1)
        pred_cf = cached_activations(env.arrays, subject, test_cf, ("logits",))["logits"].argmax(1)
        correct = pred == test.labels
        groups = test.groups(("y", "place"))
        group_acc = {f"{CLASS_NAMES[g // 2]}/{PLACES[g % 2]}": float(correct[groups == g].mean())
                     for g in np.unique(groups)}
        flip = float((pred != pred_cf).mean())
        avg, worst = float(correct.mean()), min(group_acc.values())
        return {"flip_rate": flip, "reliance": flip, "biased": flip > self.bias_threshold, "avg_acc": avg,
                "worst_group_acc": worst, "acc_gap": avg - worst, "group_acc": group_acc}

    # -- scoring ------------------------------------------------------------------------------
    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        vocab = world_vocabulary(CLASS_NAMES)
        names = [c.subject.name for c in prepared.cases]
        bg_score, reliance, biased, correct_rows, per_subject = [], [], [], [], {}
        for name in names:
            exps = explanations[name]
            truth = prepared.ground_truth[name]
            shares = [vocab.share(e, "background") for e in exps]
            rows = []
            for e in exps:
                # class c is correlated with place c (round <-> water, angular <-> land)
                own = vocab.share(e, "background", PLACES[e.target.index])
                other = vocab.share(e, "background", PLACES[1 - e.target.index])
                rows.append(float("nan") if own + other == 0 else (1.0 if own > other else 0.5 if own == other else 0.0))
            bg_score.append(float(np.mean(shares)))
            reliance.append(truth["reliance"])
            biased.append(truth["biased"])
            if truth["biased"]:
                correct_rows += rows
            per_subject[name] = {"background_score": bg_score[-1], "reliance": truth["reliance"],
                                 "biased": truth["biased"], "background_share_per_class": shares,
                                 "correct_background_per_class": rows,
                                 "top_words": [e.words(5) for e in exps]}
        seed, n_boot = prepared.seed, self.n_bootstrap
        values = [
            (SPEARMAN, spearman(bg_score, reliance), bootstrap_ci(spearman, bg_score, reliance, n_resamples=n_boot, seed=seed), len(names)),
            (AUROC, auroc(bg_score, biased), bootstrap_ci(auroc, bg_score, biased, n_resamples=n_boot, seed=seed), len(names)),
            (CORRECT_BG, nanmean(correct_rows), bootstrap_ci(nanmean, correct_rows, n_resamples=n_boot, seed=seed),
             int(np.isfinite(correct_rows).sum()) if correct_rows else 0),
        ]
        return Scored(tuple(MetricValue.of(m, v, ci, n) for m, v, ci, n in values), per_subject)
