"""Task `unit-causes`: does an explanation of a unit name what causes the unit to fire?

Ground truth by intervention. Every probe scene of the synthetic world is re-rendered with one
attribute (shape, colour, size, background type, position) set to each value the layout uses,
everything else held fixed (fexbench.data.world.intervene), and each subject's penultimate units
are read on the counterfactual images. For unit u, attribute a with values V and scene s, let
y_s(v) be u's activation with a set to v. Then

- value effect e(a, v) = mean over scenes of [y_s(v) - mean of y_s(v') over the other values v'],
  i.e. what setting a to v does to the unit compared with the attribute's other values (scale
  free in the number of values: a unit that fires only on red, or only on large objects, gets the
  same effect d for its value);
- attribute effect E(a) = mean over scenes of the mean absolute deviation of y_s(.) over V;
- both are divided by the unit's activation std on the probe set; the profile is the value
  effects and the attribute shares E(a) / sum of E;
- the top cause is the nameable attribute value (shape, colour, size, background: the world
  vocabulary has no words for positions) with the largest positive value effect.

The measurement (counterfactual images, profiles) lives in fexbench.models.unit_effects, shared with
concept-transfer's causal ground truth; this module chooses the scenes, subjects and targets.

Units that never fire on the probe (dead), that do not vary (constant), or with no positive
nameable effect are excluded and counted. Only penultimate units are measured: explainers receive
features at one layer (Probe.features, penultimate in every zoo case) and read a unit target from
them whatever Target.layer says, so a conv-channel target could not be explained as itself.

Explainers explain `units_per_subject` live units of every subject (a sample stratified by
subject, uniform within it, seeded; all live units when None) as Target("unit", i, layer="penultimate"),
on the layout's usual probe set. Subjects are the waterbirds zoo (rhos x seeds) and the ImageNet-9
zoo (p_natives x imagenet9_seeds), built by their zoo modules with the same cache keys as their
own tasks, so nothing is retrained. Every Estimate carries each unit's subject as its cluster id,
so intervals come from the two-stage bootstrap of fexbench.core.stats (subjects, then units within
each drawn subject), and comparisons and power analyses recomputed from the result file resample
the same way.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fexbench.core.contract import Case, Context, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from fexbench.core.metrics import Estimate, Metric, nanmean, spearman
from fexbench.core.seeds import derive_seed
from fexbench.data import world
from fexbench.data.concepts import ConceptVocabulary, concept_shares, hit_at_k
from fexbench.data.imageset import DataError, ImageSet
from fexbench.data.world_concepts import world_vocabulary
from fexbench.models.subjects import cached_activations
# The causal profiles are measured in a module shared with concept-transfer's causal ground truth;
# the names are re-exported here, where they were first defined.
from fexbench.models.unit_effects import (ATTRIBUTE_VALUES, ATTRIBUTES, DESIGN_VERSION, LAYOUT_VALUES, NAMEABLE,  # noqa: F401
                                          UnitProfiles, cached_counterfactuals, choose_scenes, counterfactual_scenes,
                                          counterfactual_set, design, measure_subject, profile_units)
from fexbench.tasks.imagenet9_zoo import IMAGENET9_TASK_OPTIONS, ImageNet9Zoo
from fexbench.tasks.waterbirds_zoo import WaterbirdsZoo

ORACLE_FIELDS = NAMEABLE
WATERBIRDS_TASK_OPTIONS = ("rhos", "seeds", "bias_threshold", "n_bootstrap", "data", "subjects")

TOP1 = Metric("top1_cause", "the explanation's heaviest attribute concept is the unit's measured top cause",
              True, (0.0, 1.0), "accuracy", chance=1 / len(ATTRIBUTE_VALUES))
TOP3 = Metric("top3_cause", "the unit's measured top cause is among the explanation's 3 heaviest attribute concepts",
              True, (0.0, 1.0), "accuracy", chance=3 / len(ATTRIBUTE_VALUES))
RANK = Metric("effect_rank_correlation", "per unit, Spearman(explanation's weights on attribute values, measured "
              "causal effects of those values), averaged over units", True, (-1.0, 1.0), "faithfulness", chance=0.0)
BACKGROUND = Metric("background_share_spearman", "across units, Spearman(background share of the explanation, "
                    "background share of the measured causal effects)", True, (-1.0, 1.0), "faithfulness", chance=0.0)


# ---------------------------------------------------------------- the task

@dataclass(frozen=True)
class _Layout:
    name: str
    zoo: Any
    class_names: tuple[str, ...]
    subjects: tuple[tuple[Callable[[], Subject], dict[str, Any]], ...]


class UnitCauses(Task):
    name = "unit-causes"
    description = "feature-level causal ground truth: explanations of units vs their measured intervention effects"
    metrics = (TOP1, TOP3, RANK, BACKGROUND)
    # 2: units carry their subject as cluster id; intervals from the clustered bootstrap of stats
    # 3: the zoos' subjects fine-tuned from a per-replicate base network (docs/subjects.md), rhos
    #    re-spaced, initialisation seeds derived from each replicate's seed
    version = 3
    resolution_targets = {"default": 0.2, "full": 0.1}  # docs/statistics.md#designs

    def __init__(self, rhos: tuple[float, ...] = (0.5, 0.65, 0.75, 0.85, 0.95), seeds: tuple[int, ...] = (0, 1),
                 p_natives: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), imagenet9_seeds: tuple[int, ...] = (0,),
                 n_scenes: int = 200, units_per_subject: int | None = 16, n_bootstrap: int = 1000,
                 waterbirds: Mapping[str, Any] | None = None, imagenet9: Mapping[str, Any] | None = None):
        if n_scenes < 2:
            raise DataError(f"unit-causes: n_scenes must be at least 2, got {n_scenes}")
        if units_per_subject is not None and units_per_subject < 1:
            raise DataError(f"unit-causes: units_per_subject must be positive or None, got {units_per_subject}")
        self.rhos, self.seeds = tuple(rhos), tuple(seeds)
        self.p_natives, self.imagenet9_seeds = tuple(p_natives), tuple(imagenet9_seeds)
        self.n_scenes, self.units_per_subject, self.n_bootstrap = n_scenes, units_per_subject, n_bootstrap
        self.waterbirds = dict(waterbirds or {})  # WaterbirdsSpurious arguments: same world, same cached subjects
        self.imagenet9 = dict(imagenet9 or {})  # ImageNet9Background arguments: same world, same cached subjects

    # -- subjects -----------------------------------------------------------------------------
    def subject_names(self) -> tuple[str, ...]:
        """The names of the subjects `prepare` gives, from the options alone (no data read, nothing
        trained): `fexbench explain` checks --subject against them first."""
        names: list[str] = []
        if self.rhos and self.seeds:
            wb = _zoo_from_options(WaterbirdsZoo, self.waterbirds, "waterbirds", WATERBIRDS_TASK_OPTIONS)
            names += [wb.subject_name(rho, seed) for rho in self.rhos for seed in self.seeds]
        if self.p_natives and self.imagenet9_seeds:
            in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
            names += [in9.subject_name(p, seed) for p in self.p_natives for seed in self.imagenet9_seeds]
        return tuple(names)

    def _layouts(self, env: Any) -> list[_Layout]:
        layouts = []
        if self.rhos and self.seeds:
            wb = _zoo_from_options(WaterbirdsZoo, self.waterbirds, "waterbirds", WATERBIRDS_TASK_OPTIONS)
            wb.prebuild(env, [(rho, seed) for rho in self.rhos for seed in self.seeds])
            layouts.append(_Layout("waterbirds", wb, world.WATERBIRDS_CLASSES, tuple(
                ((lambda rho=rho, seed=seed: wb.subject(env, rho, seed)), {"rho": rho, "seed": seed})
                for rho in self.rhos for seed in self.seeds)))
        if self.p_natives and self.imagenet9_seeds:
            in9 = ImageNet9Zoo.from_options(self.imagenet9, self.name, IMAGENET9_TASK_OPTIONS)
            in9.prebuild(env, [(p, seed, None) for p in self.p_natives for seed in self.imagenet9_seeds])
            layouts.append(_Layout("imagenet9", in9, world.SHAPES, tuple(
                ((lambda p=p, seed=seed: in9.subject(env, p, seed)), {"p_native": p, "seed": seed})
                for p in self.p_natives for seed in self.imagenet9_seeds)))
        if not layouts:
            raise DataError("unit-causes: no subjects (rhos x seeds and p_natives x imagenet9_seeds are both empty)")
        return layouts

    def _probe(self, env: Any, layout: _Layout) -> tuple[ImageSet, world.Scenes]:
        if layout.name == "waterbirds":
            return layout.zoo.probe_set(env), layout.zoo.probe_scenes(env)
        zoo = layout.zoo
        seed = derive_seed(env.seed, "imagenet9", "probe")  # ImageNet9Zoo.probe_set's seed
        return zoo.probe_set(env), world.imagenet9_scenes(zoo.n_probe, seed, 0.0)[0]

    def _counterfactuals(self, env: Any, layout: _Layout, probe: ImageSet,
                         scenes: world.Scenes) -> tuple[np.ndarray, ImageSet]:
        """The chosen probe scenes (seeded) and their counterfactual image set (cached by its key)."""
        chosen = choose_scenes(len(scenes), self.n_scenes, derive_seed(env.seed, "unit-causes", "scenes", layout.name))
        cf = cached_counterfactuals(env.cache_dir, "unit-causes-counterfactuals", layout.name, probe, scenes, chosen,
                                    LAYOUT_VALUES[layout.name], f"{layout.name}-counterfactuals", self.name)
        return chosen, cf

    def _targets(self, env: Any, subject: Subject, profiles: UnitProfiles) -> tuple[Target, ...]:
        live = profiles.live
        if self.units_per_subject is not None and len(live) > self.units_per_subject:
            rng = np.random.default_rng(derive_seed(env.seed, "unit-causes", "units", subject.name))
            live = np.sort(rng.choice(live, self.units_per_subject, replace=False))
        return tuple(Target("unit", int(u), f"unit{int(u)}", layer="penultimate") for u in live)

    def prepare(self, env: Any) -> Prepared:
        cases, truth, hashes = [], {}, {}
        for layout in self._layouts(env):
            probe, scenes = self._probe(env, layout)
            chosen, cf = self._counterfactuals(env, layout, probe, scenes)
            hashes[f"probe:{layout.name}"], hashes[f"counterfactuals:{layout.name}"] = probe.content_hash, cf.content_hash
            vocabulary = tuple(world_vocabulary(layout.class_names).words())
            attributes = {f: tuple(probe.metadata_values[f][c] for c in probe.field(f)) for f in ORACLE_FIELDS}
            for make, info in layout.subjects:
                subject = make()
                if subject.name in truth:
                    raise DataError(f"unit-causes: two subjects are named {subject.name!r}")
                hashes[f"weights:{subject.name}"] = subject.weights_hash
                acts = cached_activations(env.arrays, subject, probe, progress=env.progress)
                cf_acts = cached_activations(env.arrays, subject, cf, ("penultimate",), progress=env.progress)
                profiles = profile_units(acts["penultimate"], cf_acts["penultimate"], LAYOUT_VALUES[layout.name],
                                         len(chosen))
                targets = self._targets(env, subject, profiles)
                truth[subject.name] = {"layout": layout.name, **info, "n_scenes": len(chosen),
                                       **summarise(profiles, targets)}
                context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                                  vocabulary=vocabulary, resources=env.resources, seed=env.seed,
                                  device=env.device, cache_dir=env.cache_dir)
                cases.append(Case(subject, context, targets, oracle_attributes=attributes))
        return Prepared(tuple(cases), truth, hashes, seed=env.seed)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, prepared: Prepared, explanations: Mapping[str, list[Explanation]]) -> Scored:
        cols: dict[str, list[float]] = {"top1": [], "top3": [], "rank": [], "bg_share": [], "bg_effect": []}
        clusters, per_subject, chance = [], {}, {1: [], 3: []}
        for s, case in enumerate(prepared.cases):
            name = case.subject.name
            vocab = world_vocabulary(tuple(case.subject.class_names))  # the vocabulary the explainer was given
            units = prepared.ground_truth[name]["units"]
            rows = []
            for unit, exp in zip(units, explanations[name]):
                row = score_unit(vocab, exp, unit)
                p = naming_chance(tuple(case.subject.class_names))[unit["top_cause"]]
                chance[1].append(p)
                chance[3].append(1 - (1 - p) ** 3)
                for key in cols:
                    cols[key].append(row[key])
                clusters.append(s)
                rows.append({"unit": unit["unit"], "top_cause": unit["top_cause"], **row, "words": exp.words(5)})
            per_subject[name] = {"layout": prepared.ground_truth[name]["layout"], "units": rows}
        # units of one subject are explained well or badly together: the subject is their cluster
        boot = dict(n_resamples=self.n_bootstrap, seed=prepared.seed, clusters=tuple(clusters))
        column = {k: np.asarray(v, float) for k, v in cols.items()}
        return Scored.of((
            Estimate(_with_chance(TOP1, chance[1]), nanmean, (column["top1"],), **boot),
            Estimate(_with_chance(TOP3, chance[3]), nanmean, (column["top3"],), **boot),
            Estimate(RANK, nanmean, (column["rank"],), **boot),
            Estimate(BACKGROUND, spearman, (column["bg_share"], column["bg_effect"]), **boot)),
            per_subject)


@lru_cache(maxsize=8)
def naming_chance(class_names: tuple[str, ...]) -> dict[str, float]:
    """value -> the chance that a word drawn at random from the vocabulary's words that name an
    attribute value names it (shared words split, as in scoring). Values differ: ocean has five
    words, red one, so an explanation unrelated to the model names some values more often."""
    vocab = world_vocabulary(class_names)
    total: dict[str, float] = {}
    for word in vocab.words():
        probe = Explanation(Target("unit", 0), ((word, 1.0),))
        for value, share in concept_shares(vocab, probe, ATTRIBUTE_VALUES).items():
            total[value] = total.get(value, 0.0) + share
    norm = sum(total.values())
    return {v: total.get(v, 0.0) / norm for v in ATTRIBUTE_VALUES}


def score_unit(vocab: ConceptVocabulary, explanation: Explanation, unit: Mapping[str, Any]) -> dict[str, float]:
    """One unit's numbers: top-1/top-3 hits of its top cause, Spearman of the explanation's weights
    on the layout's attribute values against their measured effects, and the two background shares."""
    shares = concept_shares(vocab, explanation, ATTRIBUTE_VALUES)
    effects = unit["effects"]
    weights = [shares.get(v, 0.0) for v in effects]
    return {"top1": hit_at_k(shares, unit["top_cause"], 1), "top3": hit_at_k(shares, unit["top_cause"], 3),
            "rank": spearman(weights, list(effects.values())),
            "bg_share": vocab.share(explanation, "background"),
            "bg_effect": unit["attribute_shares"]["background"]}


def summarise(profiles: UnitProfiles, targets: Sequence[Target]) -> dict[str, Any]:
    """A subject's ground-truth record: unit counts by status, the top causes of all live units by
    attribute, and the full profile of each target unit (in target order)."""
    live = profiles.live
    tops = [profiles.top_cause(int(u)) for u in live]
    largest = [max(profiles.shares(int(u)).items(), key=lambda p: p[1])[0] for u in live]
    units = []
    for t in targets:
        attribute, value, effect = profiles.top_cause(t.index)
        units.append({"unit": t.index, "top_cause": value, "top_cause_attribute": attribute,
                      "top_effect": round(effect, 4),
                      "attribute_shares": {a: round(v, 4) for a, v in profiles.shares(t.index).items()},
                      "effects": {v: round(e, 4) for v, e in profiles.effects(t.index).items()}})
    return {"unit_counts": {"total": len(profiles.status), **profiles.counts()},
            "top_cause_attribute_counts": {a: sum(1 for t in tops if t[0] == a) for a in NAMEABLE},
            "largest_attribute_counts": {a: largest.count(a) for a in ATTRIBUTES},
            "units": units}


def _with_chance(metric: Metric, per_unit: Sequence[float]) -> Metric:
    """The metric with the chance of the scored units: an explanation naming vocabulary words at
    random hits a unit's top cause with probability naming_chance (top-3: 1 - (1 - p)^3, three
    such words); the declared class-level chance (1/28, 3/28) is that of naming values uniformly."""
    return dataclasses.replace(metric, chance=float(np.mean(per_unit))) if len(per_unit) else metric


def _zoo_from_options(cls: Any, options: Mapping[str, Any], table: str, ignore: tuple[str, ...]) -> Any:
    """A zoo from a task's table of the zoo's task arguments; other keys of that task (`ignore`) are
    accepted and unused, any other key is an error naming it."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields - set(ignore))
    if unknown:
        raise DataError(f"unit-causes: {table}.{unknown[0]} is not an option of the {table} zoo; "
                        f"options are {sorted(fields)}")
    return cls(**{k: v for k, v in options.items() if k in fields})
