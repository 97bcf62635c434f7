"""The waterbirds layout of the synthetic world and its zoo of 2-class CNNs, shared by two tasks.

`waterbirds-spurious` measures the zoo's background reliance and `unit-causes` explains its units.
Both build the same data and subjects through this module, with the same cache keys, so each
subject is trained once and read from the cache by the other, and no task imports another task.

Subjects are fine-tuned (all layers) from a base network trained on balanced data (rho = 0.5) for
`base_epochs`, one base per replicate and width, as real Waterbirds subjects are fine-tuned from a
pretrained backbone; base_epochs = 0 trains every subject from scratch. Every random stream (the
base's and each subject's initialisation, their training data) derives from the run's seed, so
replicates are independent. docs/subjects.md gives the measurements behind the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from fexbench.core.contract import Subject
from fexbench.core.seeds import derive_seed
from fexbench.data import world
from fexbench.data.imageset import ImageSet, cached_imageset
from fexbench.models.parallel import train_missing
from fexbench.models.subjects import BaseNet, TrainConfig, is_cached, load_or_train

CLASS_NAMES = ("angular", "round")
PLACES = ("land", "water")


@dataclass(frozen=True)
class WaterbirdsZoo:
    """Sizes of the layout's splits and of its subjects' training (the waterbirds task's arguments)."""

    n_train: int = 2000
    n_probe: int = 800
    n_test: int = 1200
    epochs: int = 1  # fine-tuning epochs (from scratch when base_epochs = 0: training epochs)
    width: int = 16
    image_size: int = 32
    base_epochs: int = 1
    lr: float = 3e-3

    def world_set(self, env: Any, split: str, n: int, rho: float, seed: int, swap: bool = False) -> ImageSet:
        """A rendered split (balanced over (label, place) unless it is the training split), cached by
        its generator arguments; `swap` puts every scene on a background of the other place."""
        key = {"layout": "waterbirds", "split": split, "n": n, "rho": rho, "seed": seed, "swap": swap,
               "size": self.image_size, "world": world.VERSION}

        def build() -> ImageSet:
            scenes, labels, place = self.scenes(split, n, rho, seed)
            if swap:
                scenes, place = world.swap_place(scenes, place, derive_seed(seed, "swap")), 1 - place
            return world.scenes_to_imageset(scenes, labels, CLASS_NAMES, f"waterbirds-{split}{'-swapped' if swap else ''}",
                                            self.image_size, seed, extra_metadata={"place": (place, PLACES)})

        return cached_imageset(env.cache_dir, key, build)

    @staticmethod
    def scenes(split: str, n: int, rho: float, seed: int):
        """The scene parameters behind `world_set` (without the swap): (scenes, labels, places)."""
        return world.waterbirds_scenes(n, rho, seed, balanced=(split != "train"))

    def probe_seed(self, env: Any) -> int:
        return derive_seed(env.seed, "probe")

    def probe_set(self, env: Any) -> ImageSet:
        """Probe images balanced over (label, place): rho = 0.5."""
        return self.world_set(env, "probe", self.n_probe, 0.5, self.probe_seed(env))

    def probe_scenes(self, env: Any) -> world.Scenes:
        """The probe set's scene parameters, in its order (for interventions on them)."""
        return self.scenes("probe", self.n_probe, 0.5, self.probe_seed(env))[0]

    def base(self, env: Any) -> BaseNet | None:
        """The replicate's base network (None when subjects are trained from scratch): trained on
        balanced data (rho = 0.5) of its own seed, from an initialisation of its own seed."""
        if self.base_epochs <= 0:
            return None
        data_seed = derive_seed(env.seed, "base", "train")
        config = TrainConfig(n_classes=2, width=self.width, epochs=self.base_epochs,
                             seed=derive_seed(env.seed, "init", "waterbirds", "base"))
        data_key = {"layout": "waterbirds", "n": self.n_train, "rho": 0.5, "seed": data_seed,
                    "size": self.image_size, "world": world.VERSION}
        return BaseNet(f"cnn-base-w{self.width}", config, data_key,
                       lambda: self.world_set(env, "train", self.n_train, 0.5, data_seed))

    def _spec(self, env: Any, rho: float, seed: int) -> tuple[TrainConfig, dict, int]:
        data_seed = derive_seed(env.seed, "train", rho, seed)
        # the replicate's own initialisation (and data order) for this slot: replicates share no stream
        config = TrainConfig(n_classes=2, width=self.width, epochs=self.epochs, lr=self.lr,
                             seed=derive_seed(env.seed, "init", "waterbirds", rho, seed))
        data_key = {"layout": "waterbirds", "n": self.n_train, "rho": rho, "seed": data_seed,
                    "size": self.image_size, "world": world.VERSION, "slot_seed": seed}
        return config, data_key, data_seed

    @staticmethod
    def subject_name(rho: float, seed: int) -> str:
        """The name of the subject at spurious strength rho and slot seed (known before any training)."""
        return f"cnn-rho{rho:g}-s{seed}"

    def subject(self, env: Any, rho: float, seed: int, position: str = "") -> Subject:
        """A SmallCNN trained on the layout at spurious strength rho (cached by config and data description),
        fine-tuned from the replicate's base network when there is one.
        `position` ("(3/10)") is shown in the training bar."""
        config, data_key, data_seed = self._spec(env, rho, seed)
        return load_or_train(
            env.cache_dir, self.subject_name(rho, seed), config, CLASS_NAMES,
            lambda: self.world_set(env, "train", self.n_train, rho, data_seed),
            data_key, progress=env.progress, position=position, base=self.base(env))

    def prebuild(self, env: Any, grid: Sequence[tuple[float, int]]) -> None:
        """Train the subjects (rho, seed) missing from the cache in worker processes
        (fexbench.models.parallel); `subject` then reads them back. The first worker to need the
        base network trains it while the others wait for it (the cache's build lock)."""
        base = self.base(env)
        train_missing(env, self, grid, lambda spec: is_cached(env.cache_dir, *self._spec(env, *spec)[:2], base))
