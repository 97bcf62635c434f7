"""Causal profiles of a model's units, measured by intervention on the synthetic world.

Every pixel of a world image is a function of its scene's parameters, so a scene can be re-rendered
with one attribute (shape, colour, size, background type, position) set to each value of a layout,
everything else held fixed (fexbench.data.world.intervene). Reading a model on those counterfactual
images measures what each attribute value does to each unit. For unit u, attribute a with values V
and scene s, let y_s(v) be u's activation with a set to v. Then

- value effect e(a, v) = mean over scenes of [y_s(v) - mean of y_s(v') over the other values v'],
  i.e. what setting a to v does to the unit compared with the attribute's other values (scale
  free in the number of values: a unit that fires only on red, or only on large objects, gets the
  same effect d for its value);
- attribute effect E(a) = mean over scenes of the mean absolute deviation of y_s(.) over V;
- both are divided by the unit's activation std on a reference set (the probe); the profile is the
  value effects and the attribute shares E(a) / sum of E;
- the top cause is the nameable attribute value (shape, colour, size, background: the world
  vocabulary has no words for positions) with the largest value effect.

A direction of a layer is measured as the unit whose activations are the projections on it
(`profile_directions`): its activation is linear in the layer's, so that is its causal profile.

Shared by the tasks `unit-causes` (the ground truth of each unit) and `concept-transfer` (its causal
ground truth, `truth = "causal"`), so that no task imports another. The counterfactual images are
an ImageSet cached by content (`cached_counterfactuals`), and a model's activations on them are
cached like any other (fexbench.models.subjects.cached_activations): forward passes only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fexbench.core.contract import Subject
from fexbench.data import world
from fexbench.data.imageset import DataError, ImageSet, cached_imageset

NAMEABLE = ("shape", "colour", "size", "background")  # attributes the world vocabulary has words for
ATTRIBUTES = (*NAMEABLE, "position")
# Every nameable value of the world: an explanation naming a value its layout lacks names a wrong one.
ATTRIBUTE_VALUES = (*world.SHAPES, *world.COLOUR_NAMES, *world.SIZES, *world.BACKGROUNDS)

# The values each layout's scenes take: interventions stay inside what the subjects were trained
# on and what the probe shows (a waterbirds subject has never seen a star or lava).
LAYOUT_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "waterbirds": {"shape": tuple(world.SHAPES[i] for group in world.CLASS_SHAPES for i in group),
                   "colour": world.COLOUR_NAMES, "size": world.SIZES,
                   "background": tuple(world.BACKGROUNDS[i] for group in world.PLACE_BACKGROUNDS for i in group),
                   "position": world.POSITIONS},
    "imagenet9": {"shape": world.SHAPES, "colour": world.COLOUR_NAMES, "size": world.SIZES,
                  "background": world.BACKGROUNDS, "position": world.POSITIONS},
}
DESIGN_VERSION = 1  # of the counterfactual image sets (their block layout)


# ---------------------------------------------------------------- counterfactual images

def design(values: Mapping[str, Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """The counterfactual blocks: one (attribute, value) per block, each block all chosen scenes."""
    return tuple((a, v) for a in ATTRIBUTES if a in values for v in values[a])


def counterfactual_scenes(scenes: world.Scenes, values: Mapping[str, Sequence[str]]) -> world.Scenes:
    """Every scene once per (attribute, value) of the design, block after block."""
    parts = [world.intervene(scenes, a, v) for a, v in design(values)]
    fields = [f.name for f in dataclasses.fields(scenes)]
    return world.Scenes(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})


def counterfactual_set(scenes: world.Scenes, values: Mapping[str, Sequence[str]], image_size: int,
                       name: str) -> ImageSet:
    """The counterfactual images as an ImageSet (so activations are cached by content), with each
    image's block (attribute, value) as metadata."""
    blocks = design(values)
    n = len(scenes)
    images = world.render(counterfactual_scenes(scenes, values), image_size)[0]
    attr_names = tuple(a for a in ATTRIBUTES if a in values)
    value_names = tuple(v for _, v in blocks)
    return ImageSet(
        name=name, images=images, labels=np.zeros(len(images), np.int64), class_names=("counterfactual",),
        metadata={"attribute": np.repeat([attr_names.index(a) for a, _ in blocks], n).astype(np.int64),
                  "value": np.repeat(np.arange(len(blocks)), n).astype(np.int64),
                  "scene": np.tile(np.arange(n), len(blocks)).astype(np.int64)},
        metadata_values={"attribute": attr_names, "value": value_names,
                         "scene": tuple(str(i) for i in range(n))},
        ids=tuple(f"{name}-{a}={v}-{i:05d}" for a, v in blocks for i in range(n)))


def choose_scenes(n_available: int, n: int, seed: int) -> np.ndarray:
    """min(n, n_available) scene indices drawn without replacement with `seed`, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_available, min(n, n_available), replace=False))


def cached_counterfactuals(cache_dir: str | Path, kind: str, layout: str, base: ImageSet, scenes: world.Scenes,
                           chosen: np.ndarray, values: Mapping[str, Sequence[str]], name: str,
                           owner: str) -> ImageSet:
    """The counterfactual set of the `chosen` scenes of `base` (an image set rendered from `scenes`),
    cached by (kind, design, layout, base's content, chosen scenes, values, size, world version).
    The chosen scenes must re-render byte for byte to base's images, or the scenes are not base's.
    `owner` names the task in errors; `kind` keeps each task's cache entries apart."""
    subset = scenes.subset(chosen)
    size = int(base.images.shape[1])
    if not np.array_equal(world.render(subset, size)[0], base.images[chosen]):
        raise DataError(f"{owner}: the {layout} probe scenes do not re-render to the probe images; "
                        "the zoo's probe seed or the world changed")
    key = {"kind": kind, "design": DESIGN_VERSION, "layout": layout,
           "probe": base.content_hash, "scenes": np.asarray(chosen).tolist(),
           "values": {a: list(v) for a, v in values.items()}, "size": size, "world": world.VERSION}
    return cached_imageset(cache_dir, key, lambda: counterfactual_set(subset, values, size, name))


# ---------------------------------------------------------------- causal profiles

@dataclass(frozen=True, eq=False)
class UnitProfiles:
    """Causal profiles of a layer's units (D of them), effects in units of each unit's probe std."""

    values: Mapping[str, tuple[str, ...]]
    value_effects: Mapping[str, np.ndarray]  # attribute -> (K, D)
    attribute_effects: Mapping[str, np.ndarray]  # attribute -> (D,)
    scale: np.ndarray  # (D,) the unit's activation std on the probe set
    status: np.ndarray  # (D,) "live", "dead", "constant" or "no_cause"

    @property
    def live(self) -> np.ndarray:
        return np.flatnonzero(self.status == "live")

    def counts(self) -> dict[str, int]:
        return {s: int((self.status == s).sum()) for s in ("live", "dead", "constant", "no_cause")}

    def effects(self, unit: int, attributes: Sequence[str] = NAMEABLE) -> dict[str, float]:
        """value -> its normalised effect on the unit (value names are unique across attributes)."""
        return {v: float(self.value_effects[a][k, unit]) for a in attributes if a in self.values
                for k, v in enumerate(self.values[a])}

    def top_cause(self, unit: int) -> tuple[str, str, float]:
        """(attribute, value, effect) of the nameable value with the largest effect (ties: first in order)."""
        best = ("", "", -np.inf)
        for a in NAMEABLE:
            if a in self.values:
                k = int(np.argmax(self.value_effects[a][:, unit]))
                if self.value_effects[a][k, unit] > best[2]:
                    best = (a, self.values[a][k], float(self.value_effects[a][k, unit]))
        return best

    def shares(self, unit: int) -> dict[str, float]:
        """attribute -> its share of the unit's summed attribute effects (position included)."""
        total = sum(float(e[unit]) for e in self.attribute_effects.values())
        return {a: float(e[unit]) / total if total > 0 else 0.0 for a, e in self.attribute_effects.items()}


def profile_units(probe_acts: np.ndarray, cf_acts: np.ndarray, values: Mapping[str, Sequence[str]],
                  n_scenes: int, eps: float = 1e-6) -> UnitProfiles:
    """Causal profiles from the activations on the probe (N, D) and on the counterfactual set
    (blocks x n_scenes, D) laid out as `design(values)`."""
    probe_acts, cf_acts = np.asarray(probe_acts, np.float64), np.asarray(cf_acts, np.float64)
    blocks = design(values)
    if cf_acts.shape[0] != len(blocks) * n_scenes:
        raise DataError(f"causal profiles: {cf_acts.shape[0]} counterfactual activations, expected "
                        f"{len(blocks)} blocks x {n_scenes} scenes")
    scale = probe_acts.std(axis=0)
    safe = np.where(scale > 0, scale, 1.0)
    value_effects, attribute_effects, at = {}, {}, 0
    for a in ATTRIBUTES:
        if a not in values:
            continue
        k = len(values[a])
        y = cf_acts[at * n_scenes:(at + k) * n_scenes].reshape(k, n_scenes, -1)  # (K, scenes, D)
        at += k
        mean = y.mean(axis=0, keepdims=True)
        if k > 1:  # y(v) minus the mean of the other values = K/(K-1) (y(v) - mean over all values)
            value_effects[a] = (k / (k - 1)) * (y - mean).mean(axis=1) / safe
        else:
            value_effects[a] = np.zeros((1, y.shape[2]))
        attribute_effects[a] = np.abs(y - mean).mean(axis=(0, 1)) / safe
    status = np.full(probe_acts.shape[1], "live", dtype=object)
    top = np.max(np.stack([value_effects[a].max(axis=0) for a in NAMEABLE if a in values]), axis=0)
    status[top <= eps] = "no_cause"
    status[scale <= eps * np.maximum(1.0, np.abs(probe_acts.mean(axis=0)))] = "constant"
    status[probe_acts.max(axis=0) <= 0] = "dead"
    return UnitProfiles({a: tuple(values[a]) for a in ATTRIBUTES if a in values}, value_effects,
                        attribute_effects, scale, status.astype(str))


def profile_directions(probe_acts: np.ndarray, cf_acts: np.ndarray, directions: np.ndarray,
                       values: Mapping[str, Sequence[str]], n_scenes: int) -> UnitProfiles:
    """Causal profiles of directions (T, D) of a layer: those of the units whose activations are the
    projections v . x (T "units"). A basis vector e_u gives unit u's own profile exactly. The status
    "dead" means no positive projection on the probe, which a direction (signed) may well have: read
    top causes and effects, not status, for directions."""
    directions = np.atleast_2d(np.asarray(directions, np.float64))
    return profile_units(np.asarray(probe_acts, np.float64) @ directions.T,
                         np.asarray(cf_acts, np.float64) @ directions.T, values, n_scenes)


def measure_subject(subject: Subject, probe_images: np.ndarray, scenes: world.Scenes,
                    values: Mapping[str, Sequence[str]], image_size: int, layer: str = "penultimate") -> UnitProfiles:
    """Profiles without any cache: render the counterfactuals of `scenes` and read `layer` on them
    (for hand-built subjects; the tasks go through the content-addressed caches)."""
    cf = counterfactual_set(scenes, values, image_size, "counterfactuals")
    probe_acts = subject.model.activations(probe_images, (layer,))[layer]
    cf_acts = subject.model.activations(cf.images, (layer,))[layer]
    return profile_units(probe_acts, cf_acts, values, len(scenes))
