"""Task `waterbirds-spurious`: does an explanation name the background a classifier really leans on,
in proportion to how much it leans on it?

A zoo of CNNs is trained on the waterbirds-style world at spurious strengths rho (P[place = label]).
Reliance is MEASURED per subject by exact counterfactuals: the share of balanced-test predictions
that flip when only the background is swapped to the other group. Group accuracies (average, worst
group, gap) are measured too. Explainers explain each class of each subject; the background score
of an explanation is the share of its weight on background concepts.

The same scoring runs on real Waterbirds (WILDS layout or a Hugging Face dataset): there the
probe is the val split, subjects are trained or fine-tuned on the train split subsampled to rho,
and, with no exact counterfactual, reliance is the accuracy gap between the test groups that
agree with the spurious correlation (place == label) and those that disagree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fexbench.data import world
from fexbench.core.seeds import derive_seed as _seed
from fexbench.core.cache import file_sha256
from fexbench.data.concepts import Concept, ConceptVocabulary
from fexbench.core.contract import Case, Context, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from fexbench.data.imageset import DataError, ImageSet
from fexbench.core.metrics import Estimate, Metric, auroc, finite_count, nanmean, spearman
from fexbench.models.subjects import TrainConfig, cached_activations, load_or_train
from fexbench.data.world_concepts import DISTRACTORS, GROUP_WORDS, world_vocabulary
from fexbench.tasks.waterbirds_zoo import WaterbirdsZoo

CLASS_NAMES = ("angular", "round")
REAL_CLASS_NAMES = ("landbird", "waterbird")
PLACES = ("land", "water")
ORACLE_FIELDS = ("shape", "colour", "size", "background", "place", "species")
# The Places categories Waterbirds pasted its birds on (land: bamboo forest, broadleaf forest; water: ocean, natural lake)
REAL_BACKGROUNDS = {"bamboo forest": "land", "broadleaf forest": "land", "ocean": "water", "lake": "water"}

SPEARMAN = Metric("spearman_reliance", "Spearman(background score, measured flip rate) across subjects",
                  True, (-1.0, 1.0), "faithfulness", chance=0.0)
AUROC = Metric("auroc_biased", "AUROC of background score for biased vs unbiased subjects",
               True, (0.0, 1.0), "detection", chance=0.5)
CORRECT_BG = Metric("correct_background", "biased subjects: named background is the one correlated with the class",
                    True, (0.0, 1.0), "specificity", chance=0.5)


def subject_info(subject: Subject) -> dict[str, Any]:
    """What a subject is, for the ground-truth record (rho and seed when it was trained here: the
    zoo's slot seed, whose initialisation seed each replicate derives from its own run seed)."""
    card = subject.config or {}
    data = card.get("data", {}) if isinstance(card.get("data"), Mapping) else {}
    return {"rho": data.get("rho"),
            "seed": data.get("slot_seed", card.get("train_config", {}).get("seed", data.get("seed")))}


def real_waterbirds_vocabulary() -> ConceptVocabulary:
    """Concepts for real Waterbirds: the land/water groups with their Places categories, the two labels."""
    concepts = [Concept(group, "background", words, group) for group, words in GROUP_WORDS.items()]
    concepts += [Concept(name, "background", (name,), group) for name, group in REAL_BACKGROUNDS.items()]
    concepts += [Concept(f"class:{name}", "class", (name, "bird")) for name in REAL_CLASS_NAMES]
    concepts += [Concept(word, "distractor", ()) for word in DISTRACTORS]
    return ConceptVocabulary(concepts)


def _real_subject_name(spec: Mapping[str, Any]) -> str:
    """A real-data subject's name: its `name`, else <backbone model or cnn>-rho<rho>-s<seed>."""
    return spec.get("name") or f"{spec.get('backbone', {}).get('model', 'cnn')}-rho{spec.get('rho')}-s{int(spec.get('seed', 0))}"


class WaterbirdsSpurious(Task):
    name = "waterbirds-spurious"
    description = "spurious-correlation detection: explanations vs counterfactually measured background reliance"
    metrics = (SPEARMAN, AUROC, CORRECT_BG)
    # 2: words matched through the part-of-speech lemmatiser; adj_avg_acc reported
    # 3: subjects fine-tuned from a per-replicate base network (docs/subjects.md), rhos re-spaced,
    #    initialisation seeds derived from each replicate's seed; on WILDS data adj_avg_acc is WILDS'
    #    own (fixed release weights), metadata_adj_avg_acc the metadata-weighted variant
    version = 3
    resolution_targets = {"default": 0.45, "full": 0.2}  # docs/statistics.md#designs

    def __init__(self, rhos: tuple[float, ...] = (0.5, 0.65, 0.75, 0.85, 0.95),
                 seeds: tuple[int, ...] = (0, 1), n_train: int = 2000, n_probe: int = 800, n_test: int = 1200,
                 epochs: int = 1, width: int = 16, image_size: int = 32, bias_threshold: float = 0.3,
                 n_bootstrap: int = 1000, data: Mapping[str, Any] | None = None,
                 subjects: Sequence[Mapping[str, Any]] | None = None, base_epochs: int = 1, lr: float = 3e-3):
        self.rhos, self.seeds = tuple(rhos), tuple(seeds)
        self.n_train, self.n_probe, self.n_test = n_train, n_probe, n_test
        self.epochs, self.width, self.image_size = epochs, width, image_size
        self.base_epochs, self.lr = base_epochs, lr
        self.bias_threshold, self.n_bootstrap = bias_threshold, n_bootstrap
        self.data = dict(data or {"source": "world"})
        self.subjects = [dict(s) for s in subjects or ()]

    # -- data ---------------------------------------------------------------------------------
    @property
    def zoo(self) -> WaterbirdsZoo:
        """The shared layout and zoo (fexbench.tasks.waterbirds_zoo): same data, same cached subjects."""
        return WaterbirdsZoo(self.n_train, self.n_probe, self.n_test, self.epochs, self.width, self.image_size,
                             self.base_epochs, self.lr)

    def _world(self, env: Any, split: str, n: int, rho: float, seed: int, swap: bool = False) -> ImageSet:
        return self.zoo.world_set(env, split, n, rho, seed, swap)

    def _splits(self, env: Any) -> tuple[ImageSet, ImageSet, ImageSet | None]:
        """(probe, test, background-swapped test or None) from the configured source."""
        source = self.data.get("source", "world")
        if source == "world":
            test_seed = _seed(env.seed, "test")
            return (self._world(env, "probe", self.n_probe, 0.5, _seed(env.seed, "probe")),
                    self._world(env, "test", self.n_test, 0.5, test_seed),
                    self._world(env, "test", self.n_test, 0.5, test_seed, swap=True))
        return self._real_split(env, "val"), self._real_split(env, "test"), None

    def _real_split(self, env: Any, split: str) -> ImageSet:
        source, options = self.data["source"], {k: v for k, v in self.data.items() if k != "source"}
        options.setdefault("max_bad_fraction", env.max_bad_image_fraction)
        if source == "wilds":
            from fexbench.data.waterbirds_wilds import load_waterbirds
            return load_waterbirds(split=split, **options)
        if source == "hf":
            from fexbench.data.waterbirds_hf import load_waterbirds_hf
            return load_waterbirds_hf(split=split, **options)
        raise DataError(f"waterbirds-spurious: data.source must be world, wilds or hf, not {source!r}")

    def _subjects(self, env: Any) -> list[Subject]:
        if self.data.get("source", "world") == "world":
            grid = [(rho, seed) for rho in self.rhos for seed in self.seeds]
            self.zoo.prebuild(env, grid)
            return [self._world_subject(env, rho, seed, f"({i}/{len(grid)})") for i, (rho, seed) in enumerate(grid, 1)]
        if not self.subjects:
            raise DataError("waterbirds-spurious: real data needs `subjects` (a list of subject specs)")
        return [self._real_subject(env, spec) for spec in self.subjects]

    def subject_names(self) -> tuple[str, ...]:
        """The names of the subjects `prepare` gives, from the options alone (no data read, nothing
        trained): `fexbench explain` checks --subject against them first."""
        if self.data.get("source", "world") == "world":
            return tuple(self.zoo.subject_name(rho, seed) for rho in self.rhos for seed in self.seeds)
        return tuple(_real_subject_name(spec) for spec in self.subjects)

    def _world_subject(self, env: Any, rho: float, seed: int, position: str = "") -> Subject:
        return self.zoo.subject(env, rho, seed, position)

    def _real_subject(self, env: Any, spec: Mapping[str, Any]) -> Subject:
        """A subject trained here on the real train split, subsampled to the spec's rho."""
        from fexbench.models.finetune import load_or_finetune, subsample_to_rho

        spec = dict(spec)
        rho, seed = spec.get("rho"), int(spec.get("seed", 0))
        name = _real_subject_name(spec)

        def train_set() -> ImageSet:
            train = self._real_split(env, "train")
            return train if rho is None else subsample_to_rho(train, rho, seed)

        data_key = {"source": dict(self.data), "rho": rho, "seed": seed, "fingerprint": self._fingerprint()}
        if "backbone" not in spec:  # our small CNN, trained from scratch on the real images
            return load_or_train(env.cache_dir, name,
                                 TrainConfig(n_classes=2, width=int(spec.get("width", self.width)),
                                             epochs=int(spec.get("epochs", self.epochs)), seed=seed),
                                 REAL_CLASS_NAMES, train_set, data_key, progress=env.progress)
        options = {k: v for k, v in spec.items() if k not in ("name", "backbone", "rho", "seed")}
        return load_or_finetune(env.cache_dir, name, spec["backbone"], data_key, train_set, seed=seed,
                                device=env.device, amp=env.amp, progress=env.progress,
                                forward_batch_size=env.batch_size, **options)

    def _fingerprint(self) -> str | None:
        """A cheap content hash of the real data's index (WILDS: metadata.csv), so a subject trained on
        edited data is never reused; the training images' own sha256 is recorded in the subject's card."""
        if self.data.get("source") == "wilds":
            return file_sha256(Path(self.data["root"]) / "metadata.csv")
        return None

    def prepare(self, env: Any) -> Prepared:
        probe, test, test_cf = self._splits(env)
        vocab = self._vocabulary()
        fields = [f for f in ORACLE_FIELDS if f in probe.metadata]
        attributes = {f: tuple(probe.metadata_values[f][c] for c in probe.field(f)) for f in fields}
        targets = tuple(Target("class", i, name) for i, name in enumerate(probe.class_names))
        cases, truth = [], {}
        hashes = {"test": test.content_hash, "probe": probe.content_hash}
        if test_cf is not None:
            hashes["test_swapped"] = test_cf.content_hash
        for subject in self._subjects(env):
            hashes[f"weights:{subject.name}"] = subject.weights_hash
            truth[subject.name] = {**subject_info(subject), **self._measure(env, subject, test, test_cf)}
            acts = cached_activations(env.arrays, subject, probe, progress=env.progress)
            context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                              vocabulary=tuple(vocab.words()), resources=env.resources, seed=env.seed,
                              device=env.device, cache_dir=env.cache_dir)
            cases.append(Case(subject, context, targets, oracle_attributes=attributes))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    def _vocabulary(self) -> ConceptVocabulary:
        if self.data.get("source", "world") == "world":
            return world_vocabulary(CLASS_NAMES)
        return real_waterbirds_vocabulary()

    def _measure(self, env: Any, subject: Subject, test: ImageSet, test_cf: ImageSet | None) -> dict[str, Any]:
        """Ground truth from the model's behaviour: counterfactual flip rate (when exact counterfactuals
        exist), group accuracies, and the agree/disagree accuracy gap.

        `avg_acc` is the plain mean over the test split; `adj_avg_acc` is WILDS' `adj_acc_avg`: on the
        WILDS release, exactly WILDS 2.0.0's (the release's fixed training counts; a group missing
        from the test split scores 0 with its weight), with `metadata_adj_avg_acc` the variant
        weighted by this copy's metadata.csv train split; elsewhere the per-group test accuracies
        weighted by training group counts (Hugging Face data: its train split's labels and places;
        the world: the subject's own training set), over the groups the test split holds."""
        pred = cached_activations(env.arrays, subject, test, ("logits",))["logits"].argmax(1)
        correct = pred == test.labels
        place = test.field("place")
        groups = test.groups(("y", "place"))
        group_acc = {f"{test.class_names[g // 2]}/{PLACES[g % 2]}": float(correct[groups == g].mean())
                     for g in np.unique(groups)}
        agree = place == test.labels
        gap = float(correct[agree].mean() - correct[~agree].mean()) if agree.any() and (~agree).any() else 0.0
        avg, worst = float(correct.mean()), min(group_acc.values())
        source, data_key = self.data.get("source", "world"), (subject.config or {}).get("data") or {}
        counts, counts_from = None, "unavailable: the subject's card does not describe its training data"
        if source == "wilds":
            from fexbench.data.waterbirds_wilds import train_group_counts
            counts, counts_from = train_group_counts(self.data["root"]), "train split of metadata.csv"
        elif source == "hf":
            from fexbench.data.waterbirds_hf import _codes, _open
            source_path = self.data.get("path_or_name", self.data.get("path"))
            train = _open(str(source_path), self.data.get("cache_dir"))["train"]
            rows = np.arange(len(train))
            y_tr = _codes(train[self.data.get("label_column", "y")], "train", "label", rows)
            place_tr = _codes(train[self.data.get("place_column", "place")], "train", "place", rows)
            counts, counts_from = np.bincount(2 * y_tr + place_tr, minlength=4), "train split of the dataset"
        elif {"n", "rho", "seed"} <= set(data_key):
            _, y_tr, place_tr = world.waterbirds_scenes(int(data_key["n"]), float(data_key["rho"]), int(data_key["seed"]))
            counts, counts_from = np.bincount(2 * y_tr + place_tr, minlength=4), "the subject's own training set"
        adj, metadata_adj = None, None
        if counts is not None:
            present = np.unique(groups)
            if counts[present].sum() > 0:
                adj = float(sum(counts[g] * correct[groups == g].mean() for g in present) / counts[present].sum())
        if source == "wilds":  # WILDS' own adj_acc_avg: the release's fixed counts, a missing group scores 0
            from fexbench.data.waterbirds_wilds import RELEASE_TRAIN_GROUP_COUNTS, adj_acc_avg

            adj, metadata_adj = adj_acc_avg(correct, groups), adj
            counts, counts_from = np.asarray(RELEASE_TRAIN_GROUP_COUNTS), "the release's fixed training counts (WILDS)"
        out = {"avg_acc": avg, "adj_avg_acc": adj, "metadata_adj_avg_acc": metadata_adj, "worst_group_acc": worst, "acc_gap": avg - worst,
               "group_acc": group_acc, "agree_disagree_gap": gap,
               "adj_weights": {f"{test.class_names[g // 2]}/{PLACES[g % 2]}": int(counts[g]) for g in range(4)}
               if counts is not None else None, "adj_weights_from": counts_from}
        if test_cf is not None:
            pred_cf = cached_activations(env.arrays, subject, test_cf, ("logits",))["logits"].argmax(1)
            out["flip_rate"] = float((pred != pred_cf).mean())
            out["reliance"], out["reliance_measure"] = out["flip_rate"], "counterfactual flip rate"
        else:
            out["reliance"], out["reliance_measure"] = gap, "agree-disagree group accuracy gap"
        out["biased"] = out["reliance"] > self.bias_threshold
        return out

    # -- scoring ------------------------------------------------------------------------------
    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        vocab = self._vocabulary()
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
        boot = dict(n_resamples=self.n_bootstrap, seed=prepared.seed)
        return Scored.of((Estimate(SPEARMAN, spearman, (np.asarray(bg_score), np.asarray(reliance)), **boot),
                          Estimate(AUROC, auroc, (np.asarray(bg_score), np.asarray(biased, bool)), **boot),
                          Estimate(CORRECT_BG, nanmean, (np.asarray(correct_rows, float),), count=finite_count, **boot)),
                         per_subject)
