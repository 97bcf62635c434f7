"""Shared test fixtures: tiny datasets written in exactly the real on-disk formats.

The loaders for real data are tested against these, so a loader that passes here reads the
real release without edits.

The suite runs explainers inline (FEXBENCH_EXPLAINER_ISOLATION=inline, set below unless the
environment sets it): a worker process per job costs a forkserver start (several seconds with torch)
in every process that runs jobs, which put the whole suite past its 15-minute budget. The worker
boundary is what tests/test_worker.py tests, in process mode (it sets it), and a run's metrics are
the same in both modes (tests/test_worker.py compares them).
"""
from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BASELINES = ("oracle", "random", "class-name")


def pytest_configure(config):
    import os
    os.environ.setdefault("FEXBENCH_EXPLAINER_ISOLATION", "inline")


def run_baselines(root: Path, task: str, config: dict) -> tuple:
    """Run the three baselines on one task with a tiny config in a fresh cache under root: the
    end-to-end path each task's tests share. Returns (environment, explainer name -> result)."""
    from fexbench.core.contract import Environment
    from fexbench.harness.driver import run

    env = Environment(cache_dir=root / "cache", out_dir=root / "out", progress=False)
    results = run([task], list(BASELINES), env, task_configs={task: config}, log=lambda s: None)
    return env, {r.explainer: r for r in results}


# Real CUB-200-2011 folder names, split by the Waterbirds label (1 = waterbird).
_WATERBIRD_SPECIES = ("001.Black_footed_Albatross", "059.California_Gull", "086.Pacific_Loon")
_LANDBIRD_SPECIES = ("017.Cardinal", "094.White_breasted_Nuthatch",
                     "187.American_Three_toed_Woodpecker")
# Places categories used by Waterbirds, as they appear in place_filename.
_PLACES = {0: ("/b/bamboo_forest", "/f/forest/broadleaf"), 1: ("/o/ocean", "/l/lake/natural")}
WATERBIRDS_COLUMNS = ("img_id", "img_filename", "y", "split", "place", "place_filename")


def write_waterbirds_fixture(root: str | Path, n_per_group: int = 2, image_size: int = 48,
                             seed: int = 0) -> Path:
    """Write a tiny Waterbirds release (WILDS `waterbirds_v1.0` layout) under root.

    Every split (0 train, 1 val, 2 test) holds n_per_group images of each (y, place) group.
    Rows are ordered by species folder as in the real file, so splits interleave.  Images are
    JPEGs, wider than tall like many real ones: a noisy background (greenish on land, bluish on
    water) with a bird-coloured block (warm for landbirds, white for waterbirds).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for split in (0, 1, 2):
        for y in (0, 1):
            for place in (0, 1):
                for k in range(n_per_group):
                    species_pool = _WATERBIRD_SPECIES if y else _LANDBIRD_SPECIES
                    rows.append({"y": y, "split": split, "place": place,
                                 "species": species_pool[(split + place + k) % len(species_pool)]})
    rows.sort(key=lambda r: r["species"])

    for img_id, row in enumerate(rows, start=1):
        species = row["species"]
        # CUB file names: the species name title-cased, a per-species index, an image number.
        stem = "_".join(part.capitalize() for part in species.split(".", 1)[1].split("_"))
        filename = f"{species}/{stem}_{img_id:04d}_{700 + img_id}.jpg"
        place_dir = _PLACES[row["place"]][img_id % 2]
        row.update(img_id=img_id, img_filename=filename,
                   place_filename=f"{place_dir}/{img_id:08d}.jpg")

        path = root / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_fixture_image(rng, row["y"], row["place"], image_size)).save(
            path, format="JPEG", quality=90)

    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=WATERBIRDS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root


def _fixture_image(rng: np.random.Generator, y: int, place: int, size: int) -> np.ndarray:
    height, width = size, size + size // 3
    background = np.array([40, 90, 200] if place else [60, 150, 50], dtype=np.float64)
    bird = np.array([240, 240, 235] if y else [200, 60, 30], dtype=np.float64)
    image = np.broadcast_to(background, (height, width, 3)).copy()
    top, left = height // 3, width // 3
    image[top:top + height // 3, left:left + width // 3] = bird
    image += rng.normal(0.0, 12.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def waterbirds_root(tmp_path: Path) -> Path:
    """A tiny Waterbirds release: 3 splits x 4 groups x 2 images, 48-pixel JPEGs."""
    return write_waterbirds_fixture(tmp_path / "waterbirds_v1.0")


@pytest.fixture(scope="session")
def small_clip(request):
    """A CLIP big enough to tell colours apart, trained once and kept in pytest's cache (content-keyed)."""
    from fexbench.resources.clip import EmbeddedClipConfig, load_or_train_embedded

    config = EmbeddedClipConfig(n_pairs=4000, epochs=8, seed=0)
    clip = load_or_train_embedded(Path(request.config.cache.mkdir("fexbench-test-clip")), config)
    assert clip.card["zero_shot_accuracy"]["colour"] > 0.8, clip.card  # the planted tests need colours
    return clip


@pytest.fixture(autouse=True)
def _training_allowed_again():
    """A test that forbids training (a release run) never leaks that into the next test."""
    import os

    from fexbench.core.release import TRAINING_ENV

    before = os.environ.get(TRAINING_ENV)
    yield
    if before is None:
        os.environ.pop(TRAINING_ENV, None)
    else:
        os.environ[TRAINING_ENV] = before


@contextlib.contextmanager
def _registered_toy_methods():
    """Two cheap compared methods (random words, registered as methods, not controls), so that a
    tiny run has a family of compared methods to rank; unregistered afterwards."""
    from fexbench.core import registry
    from fexbench.explainers.baselines import RandomExplainer

    made = {}
    for name in ("toy-a", "toy-b"):
        made[name] = type(name.replace("-", "_"), (RandomExplainer,), {"name": name, "control": False, "seeds": 2})
        registry.register_explainer(name, made[name], override=True)
    try:
        yield tuple(made)
    finally:
        for name in made:
            registry.explainers.unregister(name)


@pytest.fixture(scope="session")
def toy_method_registration():
    """A context manager registering the two toy methods, for fixtures of any scope."""
    return _registered_toy_methods


@pytest.fixture(scope="module")
def toy_methods():
    with _registered_toy_methods() as names:
        yield names
