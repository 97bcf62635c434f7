"""The harness on a hand-made task: error rows, contract checks, resume, oracle gating, registration."""
import zlib
import textwrap

import numpy as np
import pytest

from fexbench.core import registry
from fexbench.core.contract import Case, Context, Explainer, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from fexbench.core.metrics import Estimate, Metric, MetricValue, nanmean
from fexbench.core.results import read_result
from fexbench.core.contract import Environment
from fexbench.harness.driver import run

METRIC = Metric("hits", "share of targets whose top word is 'yes'", True, (0.0, 1.0), "toy", 0.0)


class ToyTask(Task):
    name = "toy"
    description = "toy task"
    metrics = (METRIC,)
    prepared_count = 0

    def __init__(self, n_subjects: int = 2):
        self.n_subjects = n_subjects

    def prepare(self, env):
        ToyTask.prepared_count += 1
        probe = Probe(np.zeros((4, 2, 2, 3), np.uint8), np.eye(4, 3, dtype=np.float32),
                      np.eye(4, 2, dtype=np.float32), "penultimate", ("a", "b", "c", "d"))
        ctx = Context(probe, vocabulary=("yes", "no"), resources=env.resources, cache_dir=env.cache_dir)
        cases = tuple(Case(Subject(f"s{i}", None, ("x", "y"), f"w{i}"), ctx,
                           (Target("class", 0, "x"), Target("class", 1, "y")),
                           oracle_attributes={"truth": ("yes",) * 4}) for i in range(self.n_subjects))
        return Prepared(cases, {c.subject.name: {"r": 1.0} for c in cases}, {"probe": "h"})

    def score(self, prepared, explanations):
        tops = [e.words(1) == ["yes"] for exps in explanations.values() for e in exps]
        return Scored((MetricValue.of(METRIC, float(np.mean(tops)), (0.0, 1.0), len(tops)),), {})


class Yes(Explainer):
    name = "yes"

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {"yes": 1.0}) for t in targets]


class Crashes(Explainer):
    name = "crashes"

    def explain(self, subject, targets, context):
        raise RuntimeError("boom in explain")


class ReturnsNaN(Explainer):
    name = "nan"

    def explain(self, subject, targets, context):
        return [Explanation(t, (("yes", float("nan")),)) for t in targets]


class TooFew(Explainer):
    name = "too-few"

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(targets[0], {"yes": 1.0})]


class PeeksAtTruth(Explainer):
    name = "peeks"

    def explain(self, subject, targets, context):
        assert context.attributes is None, "a non-oracle explainer must not see ground truth"
        return [Explanation.from_weights(t, {"no": 1.0}) for t in targets]


class ReadsTruth(Explainer):
    name = "reads-truth"
    is_oracle = True

    def explain(self, subject, targets, context):
        return [Explanation.from_weights(t, {context.attributes["truth"][0]: 1.0}) for t in targets]


@pytest.fixture
def toy_registry():
    names = {"toy": ToyTask}
    explainers = {c.name: c for c in (Yes, Crashes, ReturnsNaN, TooFew, PeeksAtTruth, ReadsTruth)}
    for n, c in names.items():
        registry.register_task(n, c)
    for n, c in explainers.items():
        registry.register_explainer(n, c)
    yield list(explainers)
    for n in names:
        registry.tasks.unregister(n)
    for n in explainers:
        registry.explainers.unregister(n)


def test_failing_jobs_become_error_rows_and_the_others_finish(tmp_path, toy_registry):
    env = Environment(cache_dir=tmp_path / "c", out_dir=tmp_path / "out", progress=False)
    results = {r.explainer: r for r in run(["toy"], toy_registry, env, log=lambda s: None)}
    assert results["yes"].status == "ok" and results["yes"].metric("hits").value == 1.0
    assert results["crashes"].status == "error" and "boom in explain" in results["crashes"].error
    assert results["nan"].status == "error" and "nan" in results["nan"].error.lower()
    assert results["too-few"].status == "error" and "1 explanations for 2 targets" in results["too-few"].error
    assert results["peeks"].status == "ok"
    assert results["reads-truth"].status == "ok" and results["reads-truth"].oracle
    assert results["reads-truth"].metric("hits").value == 1.0
    for name in toy_registry:  # every job wrote its file, error rows included
        assert read_result(tmp_path / "out" / "toy" / f"{name}.json").explainer == name


def test_resume_reuses_ok_results_and_reruns_on_config_change(tmp_path, toy_registry):
    env = Environment(cache_dir=tmp_path / "c", out_dir=tmp_path / "out", progress=False)
    first = run(["toy"], ["yes", "crashes"], env, log=lambda s: None)
    again = run(["toy"], ["yes", "crashes"], env, log=lambda s: None)
    assert again[0].created == first[0].created and again[0].job_key == first[0].job_key
    changed = run(["toy"], ["yes"], env, task_configs={"toy": {"n_subjects": 3}}, log=lambda s: None)
    assert changed[0].job_key != first[0].job_key
    reseeded = run(["toy"], ["yes"], Environment(tmp_path / "c", tmp_path / "out", seed=5, progress=False),
                   log=lambda s: None)
    assert reseeded[0].job_key != changed[0].job_key and reseeded[0].seed == 5


def test_explainer_from_an_installed_distribution_is_found_by_entry_point(tmp_path, monkeypatch):
    """A third-party package registers through the `fexbench.explainers` entry point group only."""
    site = tmp_path / "site"
    (site / "thirdparty_explainer").mkdir(parents=True)
    (site / "thirdparty_explainer" / "__init__.py").write_text(textwrap.dedent("""
        from fexbench.core.contract import Explainer, Explanation
        class Shout(Explainer):
            name = "shout"
            description = "says 'loud' about everything"
            def explain(self, subject, targets, context):
                return [Explanation.from_weights(t, {"loud": 1.0}) for t in targets]
    """))
    dist = site / "thirdparty_explainer-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-explainer\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fexbench.explainers]\nshout = thirdparty_explainer:Shout\n")
    monkeypatch.syspath_prepend(str(site))
    assert "shout" in registry.explainers.names()
    cls = registry.explainers.get("shout")
    assert cls.__name__ == "Shout" and cls.description.startswith("says")


def test_builtins_register_through_entry_points():
    assert {"random", "class-name", "oracle"} <= set(registry.explainers.names())
    assert "waterbirds-spurious" in registry.tasks.names()


def test_unknown_names_give_a_clear_error():
    with pytest.raises(registry.RegistryError, match="unknown explainer 'nope'.*known: .*random"):
        registry.explainers.get("nope")


def test_leaderboard_overview_has_a_headline_column_per_task(tmp_path, toy_registry):
    from fexbench.report.leaderboard import markdown, overview
    from fexbench.core.results import JobResult
    env = Environment(cache_dir=tmp_path / "c", out_dir=tmp_path / "out", progress=False)
    results = run(["toy"], ["yes", "peeks", "crashes", "reads-truth"], env, log=lambda s: None)
    other = [JobResult(**{**r.to_dict(), "task": "toy2", "metrics": r.metrics}) for r in results]
    table = overview(results + other)
    lines = table.splitlines()
    assert "toy: hits ↑" in lines[0] and "toy2: hits ↑" in lines[0]
    assert lines[2].startswith("reads-truth (oracle)")  # oracle rows first
    assert any(l.startswith("crashes") and "error" in l for l in lines)
    md = markdown(results)
    assert "## toy" in md and "| yes" in md and "1.00 [0.00, 1.00]" in md


class FakeModel:
    """A stand-in for a shared model: only its weights hash matters to the runner."""

    def __init__(self, weights_hash):
        self.weights_hash = weights_hash


class UsesModel(Explainer):
    name = "uses-model"

    def resource_names(self):
        return ("toy-model",)

    def explain(self, subject, targets, context):
        context.resources["toy-model"]
        return [Explanation.from_weights(t, {"yes": 1.0}) for t in targets]


def test_a_retrained_resource_is_never_resumed_as_current(tmp_path, toy_registry):
    """Same configs, new weights behind the shared resource: the job key changes and the job reruns;
    the result records the identity of the resource it used."""
    from fexbench.core.registry import register_resource, resources

    weights = {"hash": "w-old"}
    register_resource("toy-model", lambda env: FakeModel(weights["hash"]))
    registry.register_explainer("uses-model", UsesModel)
    try:
        first = run(["toy"], ["uses-model"], Environment(tmp_path / "c", tmp_path / "out", progress=False),
                    log=lambda s: None)[0]
        again = run(["toy"], ["uses-model"], Environment(tmp_path / "c", tmp_path / "out", progress=False),
                    log=lambda s: None)[0]
        weights["hash"] = "w-new"
        retrained = run(["toy"], ["uses-model"], Environment(tmp_path / "c", tmp_path / "out", progress=False),
                        log=lambda s: None)[0]
    finally:
        resources.unregister("toy-model")
        registry.explainers.unregister("uses-model")
    assert first.status == "ok" and first.hashes["resource:toy-model"] == "w-old"
    assert again.created == first.created and again.job_key == first.job_key
    assert retrained.job_key != first.job_key and retrained.hashes["resource:toy-model"] == "w-new"


# -- explainer seeds ---------------------------------------------------------------------------------
class CoinTask(ToyTask):
    """The toy task scored from per-target columns, so the harness can pool explainer seeds."""

    name = "coin"

    def score(self, prepared, explanations):
        tops = np.array([float(e.words(1) == ["yes"]) for exps in explanations.values() for e in exps])
        return Scored.of((Estimate(METRIC, nanmean, (tops,), n_resamples=200),), {"s0": {"tops": tops.tolist()}})


class Coin(Explainer):
    """Says 'yes' or 'no' by a coin seeded by context.seed alone (stochastic, declared)."""

    name = "coin"
    stochastic, seeds = True, 4

    def explain(self, subject, targets, context):
        rng = np.random.default_rng([context.seed, zlib.crc32(subject.name.encode())])  # name: an opaque alias
        return [Explanation.from_weights(t, {("yes", "no")[rng.integers(2)]: 1.0}) for t in targets]


@pytest.fixture
def coin_registry(toy_registry):
    registry.register_task("coin", CoinTask)
    registry.register_explainer("coin", Coin)
    yield
    registry.tasks.unregister("coin")
    registry.explainers.unregister("coin")


def _one_seed(tmp_path, seed):
    """The coin's score when run alone with context seed `seed` (one explainer seed)."""
    env = Environment(tmp_path / "c", tmp_path / f"one-{seed}", seed=seed, explainer_seeds=1, progress=False)
    return run(["coin"], ["coin"], env, task_configs={"coin": {"n_subjects": 6}}, log=lambda s: None)[0]


def test_a_stochastic_explainer_is_scored_as_the_mean_over_its_seeds(tmp_path, coin_registry):
    env = Environment(tmp_path / "c", tmp_path / "out", seed=3, progress=False)
    result = run(["coin", "toy"], ["coin", "yes"], env, task_configs={"coin": {"n_subjects": 6}},
                 log=lambda s: None)[0]
    seeds = result.explainer_seeds
    assert len(seeds) == Coin.seeds and seeds[0] == 3 and len(set(seeds)) == len(seeds)
    hits = result.metric("hits")
    assert len(hits.seed_values) == Coin.seeds and hits.value == pytest.approx(np.mean(hits.seed_values))
    assert hits.seed_values[0] == _one_seed(tmp_path, 3).metric("hits").value  # the first seed is a plain run
    assert len(set(hits.seed_values)) > 1  # the seeds really differ
    assert hits.ci_low <= hits.value <= hits.ci_high and hits.ci_high - hits.ci_low < 0.5
    assert read_result(tmp_path / "out" / "coin" / "coin.json").metric("hits").seed_values == hits.seed_values
    # a deterministic explainer runs once whatever the run asks
    yes = run(["coin"], ["yes"], Environment(tmp_path / "c", tmp_path / "out", explainer_seeds=5, progress=False),
              task_configs={"coin": {"n_subjects": 6}}, log=lambda s: None)[0]
    assert yes.explainer_seeds == [0] and yes.metric("hits").seed_values == ()


def test_the_run_overrides_the_seed_count_and_the_job_key_follows_it(tmp_path, coin_registry):
    def with_seeds(n):
        env = Environment(tmp_path / "c", tmp_path / "out", explainer_seeds=n, progress=False)
        return run(["coin"], ["coin"], env, log=lambda s: None)[0]

    four = with_seeds(0)  # 0: the explainer's own count
    assert len(four.explainer_seeds) == 4
    assert with_seeds(4).created == four.created  # the same seeds asked explicitly: resumed
    two = with_seeds(2)
    assert two.explainer_seeds == four.explainer_seeds[:2] and two.job_key != four.job_key


def test_a_task_without_estimates_pools_seeds_as_a_mean_with_no_interval(tmp_path, coin_registry):
    result = run(["toy"], ["coin"], Environment(tmp_path / "c", tmp_path / "out", progress=False),
                 log=lambda s: None)[0]
    hits = result.metric("hits")
    assert result.status == "ok" and len(hits.seed_values) == 4
    assert hits.value == pytest.approx(np.mean(hits.seed_values)) and np.isnan(hits.ci_low)


def test_a_bad_seed_count_is_an_error_row(tmp_path, coin_registry):
    class NoSeeds(Coin):
        seeds = 0
    registry.register_explainer("no-seeds", NoSeeds)
    try:
        result = run(["coin"], ["no-seeds", "yes"], Environment(tmp_path / "c", tmp_path / "out", progress=False),
                     log=lambda s: None)
    finally:
        registry.explainers.unregister("no-seeds")
    assert result[0].status == "error" and "positive integer" in result[0].error and result[1].status == "ok"


class Allocates(Explainer):
    """Holds 300 MB while it explains: the job's recorded peak must see it."""
    name = "allocates"

    def explain(self, subject, targets, context):
        block = np.ones(300 * 2**20 // 8)
        out = [Explanation.from_weights(t, {"yes": float(block[0])}) for t in targets]
        del block
        return out


def test_the_recorded_peak_memory_sees_what_a_job_allocates(tmp_path, toy_registry):
    import psutil

    registry.register_explainer("allocates", Allocates)
    try:
        before = psutil.Process().memory_info().rss / 2**20
        env = Environment(tmp_path / "c", tmp_path / "o", progress=False)
        light, heavy = run(["toy"], ["yes", "allocates"], env, log=lambda s: None)
    finally:
        registry.explainers.unregister("allocates")
    assert heavy.peak_rss_mb >= before + 250 > light.peak_rss_mb
