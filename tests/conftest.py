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


# -- test tiers --------------------------------------------------------------------------------------
# `pytest -m "not slow"` is the quick tier (at most 4 minutes on 2 idle cores); the whole suite is
# the README's command (under 15). "slow" = every test of a module whose shared fixture trains or
# runs a benchmark (its cost would move to whichever test runs first), and each test measured at
# several seconds or more in a whole-suite run (`pytest --durations=60`; re-measure when adding one).
SLOW_MODULES = frozenset({
    "test_agreement.py", "test_example_plugin.py", "test_executors.py", "test_worker.py", "test_verify.py",
    "test_publish.py", "test_site.py", "test_real_run.py", "test_replicates.py", "test_presets.py",
    "test_shipped_release.py", "test_parallel_zoo.py", "test_concept_transfer.py", "test_imagenet9.py",
    "test_waterbirds_task.py", "test_unit_causes.py", "test_sanity.py", "test_release.py", "test_graph.py",
    "test_faults.py", "test_stability.py", "test_captioner.py", "test_isolation.py", "test_runner.py",
})
SLOW_TESTS = frozenset({
    "test_agreement.py::test_agreement_reports_each_runs_groups_coverage_and_pooled_splits",
    "test_agreement.py::test_power_pools_independent_runs_into_one_pilot",
    "test_architecture.py::test_a_task_that_fails_to_prepare_gives_error_rows_and_the_run_goes_on",
    "test_architecture.py::test_the_wheel_holds_only_the_fexbench_package_and_its_data",
    "test_captioner.py::test_a_tiny_blip_saved_with_save_pretrained_loads_and_samples_by_path",
    "test_captioner.py::test_sampling_is_reproducible_with_a_seed",
    "test_check_explainer.py::test_builtin_explainers_pass[clip-dissect]",
    "test_check_explainer.py::test_builtin_explainers_pass[falcon]",
    "test_check_explainer.py::test_cli_reports_each_check_and_exits_1_on_failure",
    "test_cli.py::test_every_help_example_runs_as_written[fexbench",
    "test_compare.py::test_different_ground_truth_is_refused_unless_forced",
    "test_compare.py::test_false_alarm_rate_of_reseeded_stochastic_explainer",
    "test_compare.py::test_worse_explainer_exits_1_and_names_the_regression",
    "test_concept_transfer.py::test_transfer_end_to_end",
    "test_config.py::test_flags_replace_file_values_before_they_are_checked",
    "test_config.py::test_summary_describes_the_whole_results_folder",
    "test_defaults.py::test_every_sentence_about_a_presets_or_the_defaults_replicates_matches",
    "test_example_plugin.py::test_entry_point_is_visible_only_in_the_subprocess",
    "test_example_plugin.py::test_plugin_passes_check_explainer",
    "test_example_plugin.py::test_the_ci_gate_passes_the_plugin_and_fails_its_sign_flip",
    "test_executors.py::test_a_worker_that_dies_mid_job_is_tried_again_alone[False]",
    "test_executors.py::test_a_worker_that_dies_mid_job_is_tried_again_alone[True]",
    "test_executors.py::test_ctrl_c_ends_the_run_and_every_process_wherever_it_lands[workers",
    "test_executors.py::test_ctrl_c_ends_the_run_and_every_process_wherever_it_lands[zoo",
    "test_executors.py::test_the_process_executor_gives_the_local_results",
    "test_faults.py::test_a_bad_file_of_another_explainer_does_not_sink_the_run",
    "test_faults.py::test_flipped_bytes_in_cached_activations_are_named_and_recomputed",
    "test_faults.py::test_two_processes_on_one_cache_train_each_subject_once",
    "test_graph.py::test_local_executor_gives_exactly_the_sequential_results",
    "test_graph.py::test_plan_is_calibrated_by_a_measured_pilot_and_scales_with_replicates",
    "test_imagenet9.py::test_ground_truth_is_measured_per_variant",
    "test_isolation.py::test_the_zoo_really_varies_in_reliance",
    "test_parallel_zoo.py::test_worker_processes_train_the_same_weights_as_one_process",
    "test_presets.py::test_smoke_preset_runs_every_task_and_metric",
    "test_publish.py::test_old_schema_board_publishes",
    "test_publish.py::test_screenshot_command",
    "test_publish.py::test_site_has_every_page_and_every_link_resolves_offline",
    "test_real_run.py::test_config_run_on_real_formats_scores_every_explainer_on_both_tasks",
    "test_real_run.py::test_user_errors_on_the_real_path_are_one_clear_line",
    "test_release.py::test_a_release_holds_the_subjects_design_and_expected_hashes",
    "test_release.py::test_train_false_forbids_training_naming_the_subject",
    "test_replicates.py::test_replicate_zero_is_the_plain_run",
    "test_schema.py::test_validate_reads_the_published_older_schema_board",
    "test_shipped_release.py::test_plain_run_trains_nothing_and_gives_the_published_numbers",
    "test_site.py::test_downloads_are_in_the_site_and_hold_every_metric",
    "test_stability.py::test_power_prints_rank_stability_for_a_replicated_run",
    "test_stats.py::test_interval_covers_the_true_value_95_percent_of_the_time[spearman-moderate-5-20]",
    "test_stats.py::test_one_replicate_comparison_of_clustered_units_is_wider_and_covers",
    "test_unit_causes.py::test_ground_truth_counts_units_and_their_causes",
    "test_verify.py::test_an_honest_method_is_consistent_on_the_private_seed",
    "test_verify.py::test_the_memoriser_matches_the_honest_method_on_the_public_seed",
    "test_waterbirds_task.py::test_ground_truth_is_measured_and_spans_reliance",
    "test_waterbirds_task.py::test_same_seed_same_numbers_in_a_fresh_cache",
    "test_worker.py::test_disarming_the_alarm_is_killed_at_the_time_limit",
    "test_worker.py::test_walking_frames_or_the_gc_finds_no_ground_truth[cheat-frames]",
    "test_worker.py::test_writing_other_replicates_probe_arrays_changes_no_other_result",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::")[0]
        if path.split("/")[-1] in SLOW_MODULES or item.nodeid.split("tests/", 1)[-1] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
