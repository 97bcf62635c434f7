"""Task `imagenet9-background`: does an explanation of a class name its background in proportion
to how much the classifier's accuracy on that class depends on the background?

After the backgrounds challenge (Xiao et al., "Noise or Signal", 2020). A zoo of 9-class CNNs is
trained on the world's ImageNet-9 layout with P(class's native background) = p_native: 1.0 is
the challenge's `original` training data, 0.0 its `mixed_rand` (backgrounds uniform over the nine
types), values in between mix the two. Ground truth is measured per subject and per class on the
eight challenge variants of one test set (native backgrounds, as in the challenge): accuracy on
every variant, BG-gap = acc(mixed_same) - acc(mixed_rand), and accuracy from the background
alone (only_bg_t). Explainers explain the nine class targets of every subject on a probe set whose
backgrounds are independent of the class (p_native = 0), so that the images that drive a class
reveal its background only if the subject relies on it.

The same task runs on the real challenge (data = {source = "challenge", root = ...}): subjects are
ImageNet classifiers as they are (their 1000 logits grouped into the nine classes by
in_to_in9.json, fexbench.data.imagenet9_challenge.In9Logits) or 9-class IN-9L classifiers; ground truth
is measured on the release's eight variants by the same protocol; the probe is `mixed_rand` (the
release's class-independent backgrounds). The release records no background types, so there
native-background precision is undefined and the oracle knows only each probe image's class.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fexbench.data import imagenet9_challenge as challenge
from fexbench.data import world
from fexbench.core.cache import stable_hash
from fexbench.data.concepts import Concept, ConceptVocabulary, concept_shares
from fexbench.core.contract import Case, Explanation, Prepared, Scored, Subject, Target, Task
from fexbench.data.imageset import DataError, ImageSet
from fexbench.data.imagenet9_challenge import challenge_accuracies
from fexbench.core.metrics import Estimate, Metric, finite_count, nanmean, spearman
from fexbench.models.subjects import cached_activations
from fexbench.tasks.imagenet9_zoo import CLASS_NAMES, ImageNet9Zoo
from fexbench.data.world_concepts import DISTRACTORS, GROUP_WORDS, world_vocabulary

NATIVE_BACKGROUND = tuple(world.BACKGROUNDS[b] for b in world.CLASS_BACKGROUND)  # class index -> its native background

# The real challenge: words for its classes and for what is seen behind objects in photographs.
REAL_CLASS_WORDS = {
    "dog": ("dog", "puppy", "hound", "terrier", "retriever"),
    "bird": ("bird", "parrot", "eagle", "owl", "duck", "finch"),
    "wheeled vehicle": ("vehicle", "car", "truck", "bus", "bicycle", "motorcycle", "wheel", "tractor"),
    "reptile": ("reptile", "lizard", "snake", "turtle", "crocodile", "iguana"),
    "carnivore": ("carnivore", "cat", "fox", "wolf", "bear", "lion", "tiger", "leopard"),
    "insect": ("insect", "beetle", "butterfly", "ant", "bee", "grasshopper"),
    "musical instrument": ("instrument", "guitar", "piano", "violin", "drum", "trumpet", "accordion"),
    "primate": ("primate", "monkey", "ape", "gorilla", "chimpanzee", "baboon", "lemur"),
    "fish": ("fish", "shark", "goldfish", "salmon", "trout"),
}
REAL_SCENE_WORDS = ("sky", "road", "street", "indoor", "room", "floor", "wall", "snow", "sand", "rock", "branch",
                    "flower", "plant", "jungle", "stage", "table", "underwater", "dirt", "mud", "background")
CHALLENGE_OPTIONS = ("source", "root", "mapping_file", "image_size", "limit", "probe_variant", "probe_limit",
                     "preprocess")


def real_imagenet9_vocabulary() -> ConceptVocabulary:
    """Concepts for the real challenge: the nine classes with common members, background and scene words."""
    concepts = [Concept(f"class:{name}", "class", (name, *words)) for name, words in REAL_CLASS_WORDS.items()]
    concepts += [Concept(group, "background", words, group) for group, words in GROUP_WORDS.items()]
    concepts += [Concept(word, "background", ()) for word in REAL_SCENE_WORDS]
    taken = {w for c in concepts for w in (c.name, *c.synonyms)}
    concepts += [Concept(word, "distractor", ()) for word in DISTRACTORS if word not in taken]
    return ConceptVocabulary(concepts)

SPEARMAN_PAIRS = Metric("spearman_bg_gap", "Spearman(background score, per-class BG-gap) across (subject, class) pairs",
                        True, (-1.0, 1.0), "faithfulness", chance=0.0)
NATIVE_PRECISION = Metric("native_bg_precision",
                          "classes that rely on their background (BG-gap > threshold): the background named "
                          "most is the class's native one", True, (0.0, 1.0), "specificity",
                          chance=1 / len(world.BACKGROUNDS))
SPEARMAN_SUBJECTS = Metric("spearman_subject_bg_gap", "Spearman(mean background score, overall BG-gap) across subjects",
                           True, (-1.0, 1.0), "faithfulness", chance=0.0)


def native_hit(weights: Mapping[str, float], native: str) -> float:
    """1 if the heaviest named background is `native`, 0 if another; a tie shares the credit
    ("water" alone names ocean and lake equally: 0.5 for either); NaN when no background is named."""
    top = max(weights.values(), default=0.0)
    if top <= 0:
        return float("nan")
    tied = [b for b, w in weights.items() if w >= top * (1 - 1e-9)]
    return 1.0 / len(tied) if native in tied else 0.0


class ImageNet9Background(Task):
    name = "imagenet9-background"
    description = "background reliance (ImageNet-9 backgrounds challenge): explanations vs measured BG-gaps"
    metrics = (SPEARMAN_PAIRS, NATIVE_PRECISION, SPEARMAN_SUBJECTS)
    # 2: words matched through the part-of-speech lemmatiser; challenge preprocessing
    # 3: the ImageNet-9 zoo's initialisation seeds derived from each replicate's seed (docs/subjects.md)
    version = 3
    resolution_targets = {"default": 0.2, "full": 0.1}  # docs/statistics.md#designs

    def __init__(self, p_natives: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), seeds: tuple[int, ...] = (0,),
                 n_train: int = 3000, n_probe: int = 900, n_test: int = 1800, epochs: int = 6, width: int = 16,
                 image_size: int = 32, gap_threshold: float = 0.3, n_bootstrap: int = 1000,
                 data: Mapping[str, Any] | None = None, subjects: Sequence[Mapping[str, Any]] | None = None,
                 base_epochs: int = 0, lr: float = 3e-3):
        self.p_natives, self.seeds, self.gap_threshold = tuple(p_natives), tuple(seeds), gap_threshold
        self.n_train, self.n_probe, self.n_test = n_train, n_probe, n_test
        self.epochs, self.width, self.image_size, self.n_bootstrap = epochs, width, image_size, n_bootstrap
        self.base_epochs, self.lr = base_epochs, lr
        self.data = dict(data or {"source": "world"})
        self.subjects = [dict(s) for s in subjects or ()]

    @property
    def real(self) -> bool:
        source = self.data.get("source", "world")
        if source not in ("world", "challenge"):
            raise DataError(f"imagenet9-background: data.source must be world or challenge, not {source!r}")
        return source == "challenge"

    def vocabulary(self) -> ConceptVocabulary:
        return real_imagenet9_vocabulary() if self.real else world_vocabulary(CLASS_NAMES)

    # -- data and subjects: the shared zoo (fexbench.tasks.imagenet9_zoo) ----------------------
    @property
    def zoo(self) -> ImageNet9Zoo:
        return ImageNet9Zoo(self.n_train, self.n_probe, self.n_test, self.epochs, self.width, self.image_size,
                            self.base_epochs, self.lr)

    def case(self, env: Any, subject: Subject, probe: ImageSet, targets: tuple[Target, ...]) -> Case:
        """The zoo's case, with this task's vocabulary; on the real release the oracle knows only
        each probe image's class."""
        attributes = {"object": tuple(probe.class_names[y] for y in probe.labels)} if self.real else None
        return self.zoo.case(env, subject, probe, targets, tuple(self.vocabulary().words()), attributes)

    def measure(self, env: Any, subject: Subject, tests: Mapping[str, ImageSet]) -> dict[str, Any]:
        """Ground truth from the subject's predictions on the eight variants (the challenge's protocol)."""
        preds = {v: cached_activations(env.arrays, subject, data, ("logits",))["logits"].argmax(1)
                 for v, data in tests.items()}
        out = challenge_accuracies(preds, {v: data.labels for v, data in tests.items()}, len(CLASS_NAMES))
        out["only_bg_t_accuracy"] = out["accuracy"]["only_bg_t"]
        out["per_class_only_bg_t_accuracy"] = out["per_class_accuracy"]["only_bg_t"]
        return out

    # -- the task -----------------------------------------------------------------------------
    def subject_names(self) -> tuple[str, ...]:
        """The names of the subjects `prepare` gives, from the options alone (no data read, nothing
        trained): `fexbench explain` checks --subject against them first."""
        if self.real:
            return tuple(spec.get("name") or str((spec.get("backbone") or {}).get("model")) for spec in self.subjects)
        return tuple(self.zoo.subject_name(p, s) for p in self.p_natives for s in self.seeds)

    def prepare(self, env: Any) -> Prepared:
        if self.real:
            return self._prepare_challenge(env)
        probe, tests = self.zoo.probe_set(env), self.zoo.test_sets(env)
        targets = tuple(Target("class", i, name) for i, name in enumerate(CLASS_NAMES))
        hashes = {"probe": probe.content_hash, **{f"test:{v}": d.content_hash for v, d in tests.items()}}
        cases, truth = [], {}
        self.zoo.prebuild(env, [(p, s, None) for p in self.p_natives for s in self.seeds])
        for p_native in self.p_natives:
            for seed in self.seeds:
                position = f"({len(cases) + 1}/{len(self.p_natives) * len(self.seeds)})"
                subject = self.zoo.subject(env, p_native, seed, position=position)
                hashes[f"weights:{subject.name}"] = subject.weights_hash
                truth[subject.name] = {"p_native": p_native, "seed": seed, **self.measure(env, subject, tests)}
                cases.append(self.case(env, subject, probe, targets))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    # -- the real challenge -------------------------------------------------------------------
    def _challenge_options(self) -> dict[str, Any]:
        unknown = [k for k in self.data if k not in CHALLENGE_OPTIONS]
        if unknown:
            raise DataError(f"imagenet9-background: unknown data option(s) {unknown}; options are {CHALLENGE_OPTIONS}")
        if "root" not in self.data:
            raise DataError("imagenet9-background: data.root (the unpacked bg_challenge folder) is required")
        root = Path(self.data["root"])
        # "challenge": the reference's evaluation (unresized, ToTensor + the training set's mean/std);
        # "model": images squashed to image_size, then each subject's own processor
        preprocess = self.data.get("preprocess", "challenge")
        if preprocess not in challenge.PREPROCESS_CHOICES:
            raise DataError(f"imagenet9-background: data.preprocess = {preprocess!r}; "
                            f"choose one of {', '.join(challenge.PREPROCESS_CHOICES)}")
        return {"root": root, "mapping_file": Path(self.data.get("mapping_file", root / "in_to_in9.json")),
                "preprocess": preprocess,
                "image_size": int(self.data.get("image_size", 224)), "limit": self.data.get("limit"),
                "probe_variant": self.data.get("probe_variant", "mixed_rand"),
                "probe_limit": self.data.get("probe_limit", 1000)}

    def _real_subject(self, env: Any, spec: Mapping[str, Any], mapping: np.ndarray,
                      preprocess: str = "model") -> Subject:
        """An ImageNet (1000 logits, grouped by the mapping) or IN-9L (9 logits) classifier, as it is."""
        from fexbench.models.finetune import validate_subject
        from fexbench.models.pretrained import load_classifier

        spec = validate_subject(spec)
        unused = [k for k in spec if k not in ("name", "backbone")]
        if unused:
            raise DataError(f"imagenet9-background: subject key(s) {unused} do not apply: "
                            "the challenge scores classifiers as they are (name and backbone only)")
        classifier, info = load_classifier(spec["backbone"], env.device, amp=env.amp, batch_size=env.batch_size)
        name = spec.get("name") or str(spec["backbone"]["model"])
        if info["n_classes"] == challenge.N_IMAGENET_CLASSES:
            model, names = challenge.in9_classifier(classifier, mapping), (*challenge.CLASS_NAMES, challenge.UNMAPPED)
            weights = stable_hash({"weights": info["weights_sha256"], "in_to_in9": mapping.tolist()}, 64)
        elif info["n_classes"] == len(challenge.CLASS_NAMES):
            model, names, weights = classifier, challenge.CLASS_NAMES, info["weights_sha256"]
        else:
            raise DataError(f"imagenet9-background: subject {name!r} has {info['n_classes']} classes; "
                            f"expected 1000 (ImageNet, mapped by in_to_in9.json) or 9 (IN-9L)")
        if preprocess == "challenge":  # a different input is a different subject for every cache
            model = challenge.with_preprocess(model, challenge.challenge_preprocess(info["n_classes"]))
            weights = stable_hash({"weights": weights, "preprocess": "challenge"}, 64)
        config = {"backbone": dict(spec["backbone"]), "backbone_sha256": info["weights_sha256"],
                  "n_classes": info["n_classes"], "preprocess": preprocess}
        return Subject(name=name, model=model, class_names=tuple(names), weights_hash=weights, config=config)

    def _prepare_challenge(self, env: Any) -> Prepared:
        """Ground truth on the release's eight variants, one variant in memory at a time."""
        opts = self._challenge_options()
        if not self.subjects:
            raise DataError("imagenet9-background: the challenge needs `subjects` (ImageNet or IN-9L classifiers)")
        resize = opts["preprocess"] == "model"
        challenge.check_challenge_layout(opts["root"], (*world.VARIANTS, opts["probe_variant"]),
                                         None if resize else opts["image_size"])  # before any model loads
        mapping = challenge.load_in_to_in9(opts["mapping_file"])
        subjects = [self._real_subject(env, spec, mapping, opts["preprocess"]) for spec in self.subjects]
        bad, workers = getattr(env, "max_bad_image_fraction", 0.0), getattr(env, "workers", None)
        hashes = {"in_to_in9": stable_hash(mapping.tolist(), 64)}
        preds: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in subjects}
        labels: dict[str, np.ndarray] = {}
        for variant in world.VARIANTS:
            data = challenge.load_challenge_variant(opts["root"], variant, opts["image_size"], opts["limit"], bad,
                                                    workers, resize)
            hashes[f"test:{variant}"], labels[variant] = data.content_hash, data.labels
            for subject in subjects:
                logits = cached_activations(env.arrays, subject, data, ("logits",), progress=env.progress)["logits"]
                preds[subject.name][variant] = logits.argmax(1)
            del data
        probe = challenge.load_challenge_variant(opts["root"], opts["probe_variant"], opts["image_size"],
                                                 opts["probe_limit"], bad, workers, resize)
        hashes["probe"] = probe.content_hash
        targets = tuple(Target("class", i, name) for i, name in enumerate(challenge.CLASS_NAMES))
        cases, truth = [], {}
        for subject in subjects:
            hashes[f"weights:{subject.name}"] = subject.weights_hash
            out = challenge_accuracies(preds[subject.name], labels, len(challenge.CLASS_NAMES))
            truth[subject.name] = {**out, "only_bg_t_accuracy": out["accuracy"]["only_bg_t"],
                                   "per_class_only_bg_t_accuracy": out["per_class_accuracy"]["only_bg_t"]}
            cases.append(self.case(env, subject, probe, targets))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        vocab, real = self.vocabulary(), self.real
        pair_score, pair_gap, hits, subj_score, subj_gap, per_subject = [], [], [], [], [], {}
        for case in prepared.cases:
            name, truth = case.subject.name, prepared.ground_truth[case.subject.name]
            scores, natives = [], []
            for e in explanations[name]:
                c = e.target.index
                gap = truth["per_class_bg_gap"][c]
                scores.append(vocab.share(e, "background"))
                natives.append(float("nan") if real else  # the release records no background types
                               native_hit(concept_shares(vocab, e, world.BACKGROUNDS), NATIVE_BACKGROUND[c]))
                if not np.isfinite(gap):
                    continue  # a class with no test image (a `limit` on real data): no ground truth
                pair_score.append(scores[-1])
                pair_gap.append(gap)
                if gap > self.gap_threshold:
                    hits.append(natives[-1])
            subj_score.append(float(np.mean(scores)))
            subj_gap.append(truth["bg_gap"])
            per_subject[name] = {"background_score": subj_score[-1], "bg_gap": truth["bg_gap"],
                                 "background_score_per_class": scores,
                                 "per_class_bg_gap": [truth["per_class_bg_gap"][e.target.index] for e in explanations[name]],
                                 "names_native_background_per_class": natives,
                                 "top_words": [e.words(5) for e in explanations[name]]}
        boot = dict(n_resamples=self.n_bootstrap, seed=prepared.seed)
        pairs, subjects = (np.asarray(pair_score), np.asarray(pair_gap)), (np.asarray(subj_score), np.asarray(subj_gap))
        return Scored.of((Estimate(SPEARMAN_PAIRS, spearman, pairs, **boot),
                          Estimate(NATIVE_PRECISION, nanmean, (np.asarray(hits, float),), count=finite_count, **boot),
                          Estimate(SPEARMAN_SUBJECTS, spearman, subjects, **boot)),
                         per_subject)
