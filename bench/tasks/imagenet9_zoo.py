"""The ImageNet-9 layout of the synthetic world and its zoo of 9-class CNNs, shared by three tasks.

`imagenet9-background` measures the zoo's BG-gaps, `concept-transfer` maps between two of its
subjects, and `sanity-randomization` randomises one of them; `unit-causes` explains their units.
They all build the same data and subjects through this module, so each is trained once and read
from the cache by the others, and no task imports another task.

Subjects are fine-tuned (all layers) from a base network trained on class-independent backgrounds
(p_native = 0) for `base_epochs`, one base per replicate and width, as real ImageNet-9 subjects
are fine-tuned from a pretrained backbone; base_epochs = 0 trains every subject from scratch.
Every random stream (initialisations, training data) derives from the run's seed, so replicates
are independent. docs/subjects.md gives the measurements behind the defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from fexbench.core.contract import Case, Context, Probe, Subject, Target
from fexbench.core.seeds import derive_seed
from fexbench.data import world
from fexbench.data.imageset import DataError, ImageSet, cached_imageset
from fexbench.data.world_concepts import world_vocabulary
from fexbench.models.parallel import train_missing
from fexbench.models.subjects import BaseNet, TrainConfig, cached_activations, is_cached, load_or_train

CLASS_NAMES = world.SHAPES
ORACLE_FIELDS = ("shape", "colour", "size", "background")
# Arguments of the imagenet9-background task that are not the zoo's: accepted in another task's
# `imagenet9` table (it may copy the task's table) and unused there.
IMAGENET9_TASK_OPTIONS = ("p_natives", "seeds", "gap_threshold", "n_bootstrap", "data", "subjects")


@dataclass(frozen=True)
class ImageNet9Zoo:
    """Sizes of the layout's splits and of its subjects' training (the ImageNet-9 task's arguments)."""

    n_train: int = 3000
    n_probe: int = 900
    n_test: int = 1800
    epochs: int = 6
    width: int = 16
    image_size: int = 32
    base_epochs: int = 0
    lr: float = 3e-3

    @classmethod
    def from_options(cls, options: Mapping[str, Any], owner: str, ignore: tuple[str, ...] = ()) -> "ImageNet9Zoo":
        """The zoo from a task's `imagenet9` table (ImageNet-9 task arguments); other keys of that
        task (`ignore`) are accepted and unused, any other key is an error naming it."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields - set(ignore))
        if unknown:
            raise DataError(f"{owner}: imagenet9.{unknown[0]} is not an option of the ImageNet-9 zoo; "
                            f"options are {sorted(fields)}")
        return cls(**{k: v for k, v in options.items() if k in fields})

    def world_set(self, env: Any, split: str, n: int, seed: int, p_native: float, variant: str = "original") -> ImageSet:
        """A rendered split of the ImageNet-9 layout, cached by its generator arguments."""
        key = {"layout": "imagenet9", "split": split, "n": n, "seed": seed, "p_native": p_native,
               "variant": variant, "size": self.image_size, "world": world.VERSION}
        return cached_imageset(env.cache_dir, key, lambda: world.imagenet9_set(
            n, seed, variant, p_native, self.image_size, name=f"imagenet9-{split}-{variant}"))

    def probe_set(self, env: Any) -> ImageSet:
        """Probe images with class-independent backgrounds (p_native = 0)."""
        return self.world_set(env, "probe", self.n_probe, derive_seed(env.seed, "imagenet9", "probe"), 0.0)

    def test_sets(self, env: Any) -> dict[str, ImageSet]:
        """The eight challenge variants of one test set with native backgrounds, as in the challenge."""
        seed = derive_seed(env.seed, "imagenet9", "test")
        return {v: self.world_set(env, "test", self.n_test, seed, 1.0, v) for v in world.VARIANTS}

    def base(self, env: Any, width: int | None = None) -> BaseNet | None:
        """The replicate's base network of this width (None when subjects are trained from scratch):
        trained on class-independent backgrounds (p_native = 0), from an initialisation of its own seed."""
        if self.base_epochs <= 0:
            return None
        width = self.width if width is None else width
        data_seed = derive_seed(env.seed, "imagenet9", "base", "train")
        config = TrainConfig(n_classes=len(CLASS_NAMES), width=width, epochs=self.base_epochs,
                             seed=derive_seed(env.seed, "init", "imagenet9", "base", width))
        data_key = {"layout": "imagenet9", "n": self.n_train, "p_native": 0.0, "seed": data_seed,
                    "size": self.image_size, "world": world.VERSION}
        return BaseNet(f"cnn9-base-w{width}", config, data_key,
                       lambda: self.world_set(env, "train", self.n_train, data_seed, 0.0))

    def subject_name(self, p_native: float, seed: int, width: int | None = None) -> str:
        """The name of the subject at native fraction p_native, slot seed and width (None: the zoo's),
        known before any training."""
        width = self.width if width is None else width
        return f"cnn9-p{p_native:g}-s{seed}" + (f"-w{width}" if width != self.width else "")

    def _spec(self, env: Any, p_native: float, seed: int, width: int | None) -> tuple[str, TrainConfig, dict, int]:
        width = self.width if width is None else width
        data_seed = derive_seed(env.seed, "imagenet9", "train", p_native, seed)
        name = self.subject_name(p_native, seed, width)
        # the replicate's own initialisation (and data order) for this slot: replicates share no stream
        config = TrainConfig(n_classes=len(CLASS_NAMES), width=width, epochs=self.epochs, lr=self.lr,
                             seed=derive_seed(env.seed, "init", "imagenet9", p_native, seed, width))
        data_key = {"layout": "imagenet9", "n": self.n_train, "p_native": p_native, "seed": data_seed,
                    "size": self.image_size, "world": world.VERSION, "slot_seed": seed}
        return name, config, data_key, data_seed

    def subject(self, env: Any, p_native: float, seed: int, width: int | None = None, position: str = "") -> Subject:
        """A SmallCNN trained on the layout at p_native (cached by its full config and data description),
        fine-tuned from the replicate's base network of its width when there is one.
        `position` ("(3/10)") is shown in the training bar."""
        name, config, data_key, data_seed = self._spec(env, p_native, seed, width)
        return load_or_train(
            env.cache_dir, name, config, CLASS_NAMES,
            lambda: self.world_set(env, "train", self.n_train, data_seed, p_native),
            data_key, progress=env.progress, position=position, base=self.base(env, width))

    def prebuild(self, env: Any, specs: Sequence[tuple[float, int, int | None]]) -> None:
        """Train the subjects (p_native, seed, width) missing from the cache in worker processes
        (fexbench.models.parallel); `subject` then reads them back. The first worker to need a base
        network trains it while the others wait for it (the cache's build lock)."""
        train_missing(env, self, specs,
                      lambda spec: is_cached(env.cache_dir, *self._spec(env, *spec)[1:3], self.base(env, spec[2])))

    def case(self, env: Any, subject: Subject, probe: ImageSet, targets: tuple[Target, ...],
             vocabulary: tuple[str, ...] | None = None, attributes: Mapping[str, tuple[str, ...]] | None = None) -> Case:
        """The Case of a subject on a probe set: its penultimate features, logits, the vocabulary;
        the oracle gets the probe's world attributes (or `attributes` when given)."""
        acts = cached_activations(env.arrays, subject, probe, progress=env.progress)
        if attributes is None:
            attributes = {f: tuple(probe.metadata_values[f][c] for c in probe.field(f)) for f in ORACLE_FIELDS}
        if vocabulary is None:
            vocabulary = tuple(world_vocabulary(CLASS_NAMES).words())
        context = Context(Probe(probe.images, acts["penultimate"], acts["logits"], "penultimate", probe.ids),
                          vocabulary=vocabulary, resources=env.resources,
                          seed=env.seed, device=env.device, cache_dir=env.cache_dir)
        return Case(subject, context, targets, oracle_attributes=attributes)
