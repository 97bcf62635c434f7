"""The conformance kit for explainer authors: `from fexbench.testing import explainer_checks`.

Like scikit-learn's `parametrize_with_checks`, each check is a separate test case:

    import pytest
    from fexbench.testing import explainer_checks

    @pytest.mark.parametrize("check", explainer_checks("my_pkg.method:MyExplainer", {"n_words": 5}), ids=str)
    def test_conformance(check):
        check()

A failing check raises `CheckFailed` (an AssertionError) that names the rule and what was
observed. `check_explainer` runs them all and returns the outcomes (what `fexbench
check-explainer` prints). The checks run on a tiny world (`tiny_world`) whose tiny CLIP and
captioner are cached under $FEXBENCH_CHECK_CACHE or the user cache folder (or `cache_dir`).

Why these checks:

A full benchmark run takes minutes and reports a broken explainer as an error row (or, worse, as
a score): a wrong number of explanations, NaN weights, reading the labels, writing into the probe
arrays every other explainer shares, or reading a shared resource the job key does not know
about. These checks run the explainer on a tiny world (one small CNN trained for a few seconds,
a 64-image probe, class, unit and direction targets, tiny shared resources) and name each broken
rule with what was observed, like scikit-learn's `check_estimator`.

Each check is a `Check` (callable; raises `CheckFailed`, an AssertionError, naming the rule and
the observation), so an author's own pytest suite can parametrize over
`fexbench.testing.explainer_checks(MyExplainer)`. The harness enforces the same rules during a
run where it can do so for free (fexbench.harness.runner: counts and order, finite weights,
read-only probes, hidden ground truth, declared resources); determinism and ground-truth
independence cost a second explain, so only this suite checks them.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import time
import types
import unittest
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fexbench.core.contract import Case, Context, Environment, Explainer, ExplainerError, Explanation, Probe, \
    Subject, Target

KINDS = ("class", "unit", "direction")
# Shared resources shrunk to what builds in seconds (CLIP: ~600 captioned images, one epoch;
# captioner: a 16-wide one-layer decoder). Their explanations are poor; only the contract is checked.
TINY_RESOURCES: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({
    "clip": types.MappingProxyType({"n_pairs": 600, "epochs": 1}),
    "captioner": types.MappingProxyType({"n_train": 96, "captions_per_image": 1, "epochs": 1, "batch_size": 32,
                                         "n_embd": 16, "n_layer": 1, "n_head": 2, "encoder_width": 4,
                                         "n_heldout": 16}),
})


class CheckFailed(AssertionError):
    """A conformance check failed; the message names the check and what was observed."""


class ExplainFailed(CheckFailed):
    """The explainer itself failed while a check ran it (it raised, or broke the count or order
    rule): a later check that meets this after one_per_target failed is skipped, not failed again."""


class CheckSkipped(unittest.SkipTest):
    """A check that could not be told (e.g. one_per_target failed, so every later explain fails
    the same way); pytest reports it as skipped, `run_checks` as "skip" with the reason."""


# ------------------------------------------------------------------------------------ the tiny world

@dataclass(frozen=True, eq=False)
class TinyWorld:
    """One case of the synthetic world, small enough to explain in a second: a SmallCNN (2 classes,
    16 penultimate units) trained on 300 waterbirds-world images, a 64-image balanced probe, and
    per kind a few targets. `attributes` is the probe's ground truth (only oracles may see it);
    `card` is a training card that spells the spurious correlation (explainers never see it)."""

    subject: Subject
    context: Context
    targets: Mapping[str, tuple[Target, ...]]
    attributes: Mapping[str, tuple[str, ...]]
    card: Mapping[str, Any]

    def case(self, kinds: Sequence[str]) -> Case:
        targets = tuple(t for k in kinds for t in self.targets[k])
        return Case(self.subject, self.context, targets, oracle_attributes=self.attributes)


def default_cache_dir() -> Path:
    """The check's cache (tiny CLIP and captioner, content-keyed): $FEXBENCH_CHECK_CACHE, else the
    user cache folder, so repeated checks take seconds without touching a run's cache."""
    if os.environ.get("FEXBENCH_CHECK_CACHE"):
        return Path(os.environ["FEXBENCH_CHECK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fexbench" / "check"


@lru_cache(maxsize=4)
def tiny_world(cache_dir: str | Path | None = None, seed: int = 0) -> TinyWorld:
    """Build (once per process and cache folder) the tiny world the checks run on."""
    from fexbench.data import world
    from fexbench.data.world_concepts import world_vocabulary
    from fexbench.models.subjects import TrainConfig, small_cnn_classifier, train_cnn

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with _threads(1):
        module = train_cnn(world.waterbirds_set(300, 0.9, seed=1_001 + seed),
                           TrainConfig(2, width=8, hidden=16, epochs=3, lr=1e-2, seed=seed), progress=False)
        probe_set = world.waterbirds_set(64, 0.5, seed=1_002 + seed, balanced=True)
        model = small_cnn_classifier(module)
        acts = model.activations(probe_set.images)
    weights_hash = f"tiny-{seed}"
    card = {"rho": 0.9, "spurious": "place", "train_data": "waterbirds-world rho=0.9: round objects on water"}
    subject = Subject("cnn-rho0.9-place-spurious", model, tuple(probe_set.class_names), weights_hash, card)
    env = Environment(cache_dir=cache_dir, seed=seed, progress=False,
                      resource_configs=types.MappingProxyType({k: dict(v) for k, v in TINY_RESOURCES.items()}))
    probe = Probe(probe_set.images, acts["penultimate"], acts["logits"], "penultimate", tuple(probe_set.ids))
    vocabulary = tuple(world_vocabulary(tuple(probe_set.class_names)).words())
    context = Context(probe, vocabulary, resources=env.resources, seed=seed, cache_dir=cache_dir)
    rng = np.random.default_rng(seed)
    dim = probe.features.shape[1]
    directions = [rng.normal(size=dim) for _ in range(2)]
    targets = {
        "class": tuple(Target("class", i, n) for i, n in enumerate(probe_set.class_names)),
        "unit": tuple(Target("unit", int(u), f"unit{int(u)}") for u in np.argsort(-probe.features.std(0))[:3]),
        "direction": tuple(Target("direction", i, f"direction{i}", direction=tuple(float(x) for x in d / np.linalg.norm(d)))
                           for i, d in enumerate(directions)),
    }
    fields = [f for f in ("shape", "colour", "background", "place", "size") if f in probe_set.metadata]
    attributes = {f: tuple(probe_set.metadata_values[f][c] for c in probe_set.field(f)) for f in fields}
    return TinyWorld(subject, context, targets, attributes, card)


class _threads:
    """One torch thread while the tiny subject trains (tiny matrices; see fexbench.core.threads.limited)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self) -> None:
        import torch
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        import torch
        torch.set_num_threads(self.before)


# ------------------------------------------------------------------------------------ running it

class RecordingResources(Mapping[str, Any]):
    """context.resources as the explainer sees it, noting each name it reads."""

    def __init__(self, resources: Mapping[str, Any]):
        self._resources, self.read = resources, []

    def __getitem__(self, name: str) -> Any:
        self.read.append(name)
        return self._resources[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)


def resolve_explainer(spec: str | type) -> tuple[str, type]:
    """A registered name, `module:Class` (or `module.Class`), or the class itself -> (name, class)."""
    if isinstance(spec, type):
        return spec.name or spec.__name__, spec
    from fexbench.core import registry
    if ":" in spec or ("." in spec and spec not in registry.explainers.names()):
        module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise registry.RegistryError(f"cannot import explainer {spec!r}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Explainer)):
            raise registry.RegistryError(f"{spec!r} is not a subclass of fexbench's Explainer")
        return cls.name or attr, cls
    return spec, registry.explainers.get(spec)


@dataclass(eq=False)
class Runner:
    """Runs one explainer configuration on the tiny world: through the harness's isolated view
    (what a run gives it) or, for the checks that need it, on a raw context."""

    name: str
    cls: type
    options: Mapping[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # check name -> None (passed) or its failure message, for the checks others depend on
    verdicts: dict[str, str | None] = field(default_factory=dict)
    # seed -> the records of every plain explain (the isolated view, every target) with that seed
    plain_runs: dict[int, list[list[tuple]]] = field(default_factory=dict)

    @property
    def world(self) -> TinyWorld:
        return tiny_world(self.cache_dir)

    def make(self) -> Explainer:
        try:
            return self.cls(**dict(self.options))
        except TypeError as exc:
            raise CheckFailed(f"construct: {self.name}(**{dict(self.options)!r}) failed: {exc}") from None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in KINDS if k in tuple(getattr(self.cls, "target_kinds", KINDS)))

    def view(self, explainer: Explainer, seed: int, targets: Sequence[Target] | None = None,
             resources: Mapping[str, Any] | None = None) -> tuple[Subject, Context, Case]:
        from fexbench.harness.isolation import explainer_view
        case = self.world.case(self.kinds)
        if targets is not None:
            case = dataclasses.replace(case, targets=tuple(targets))
        root = Path(self.cache_dir if self.cache_dir is not None else default_cache_dir())
        subject, context = explainer_view(case, explainer, self.name, seed, root, resources)
        return subject, context, case

    def explain(self, seed: int = 0, targets: Sequence[Target] | None = None, subject: Subject | None = None,
                context: Context | None = None, resources: Mapping[str, Any] | None = None,
                what: str = "explain") -> list[Explanation]:
        """fit then explain on the isolated view (or the given subject/context); the contract's
        count and order rules applied, exceptions named."""
        plain = targets is None and subject is None and context is None and resources is None
        explainer = self.make()
        view_subject, view_context, case = self.view(explainer, seed, targets, resources)
        subject, context = subject or view_subject, context or view_context
        t0 = time.perf_counter()
        try:
            explainer = explainer.fit(subject, context) or explainer
            out = explainer.explain(subject, case.targets, context)
        except CheckFailed:
            raise
        except Exception as exc:
            from fexbench.core.errors import read_only_write_message
            named = read_only_write_message(exc, context.probe, f"explainer {self.name!r}")
            if named:
                raise ExplainFailed(f"{what}: {named}") from exc
            raise ExplainFailed(f"{what}: {self.name} raised {type(exc).__name__}: {exc}") from exc
        self.timings.setdefault(what, time.perf_counter() - t0)
        self.timings.setdefault(f"{what}:targets", len(case.targets))
        order = _order_problem(self.name, case.targets, out)
        if order:
            raise ExplainFailed(f"{what}: {order}")
        from fexbench.harness.runner import check_explanations
        try:
            checked = check_explanations(self.name, case, out)
        except ExplainerError as exc:
            raise ExplainFailed(f"{what}: {exc}") from None
        if plain:
            self.plain_runs.setdefault(seed, []).append(_record(checked))
        return checked


def _order_problem(name: str, targets: Sequence[Target], out: Any) -> str | None:
    """When the explanations answer exactly the asked targets but in another order: what is wrong
    (naming the first misplaced target, where it was asked and where it came back) and what to do;
    else None (the count and the rest are the contract check's)."""
    if not isinstance(out, (list, tuple)) or len(out) != len(targets) or not all(isinstance(e, Explanation) for e in out):
        return None
    got = [e.target for e in out]
    if got == list(targets):
        return None
    try:
        if sorted(t.key for t in got) != sorted(t.key for t in targets) or len({t.key for t in targets}) != len(targets):
            return None
    except TypeError:
        return None
    i = next(i for i, (g, t) in enumerate(zip(got, targets)) if g != t)
    asked = targets[i]
    j = next((j for j, g in enumerate(got) if g == asked), None)
    if j is None:
        return None
    return (f"{name} returned the explanations in another order than the targets were asked: the first misplaced "
            f"target is {asked.key}, asked at position {i + 1} of {len(targets)} but returned at position {j + 1} "
            f"(position {i + 1} holds {got[i].key}); return one Explanation per target in the order of `targets` "
            f"(iterate over the targets as given; do not sort or group them)")


def _record(explanations: Sequence[Explanation]) -> list[tuple]:
    return [(e.target.key, tuple((w, round(float(v), 9)) for w, v in e.concepts)) for e in explanations]


def _first_difference(a: Sequence[Explanation], b: Sequence[Explanation]) -> str:
    for x, y in zip(_record(a), _record(b)):
        if x != y:
            return f"{x[0]}: {list(x[1])[:4]} vs {list(y[1])[:4]}"
    return "none"


# ------------------------------------------------------------------------------------ the checks

@dataclass(frozen=True)
class Check:
    """One named conformance check of one explainer configuration; call it to run it."""

    name: str
    runner: Runner = field(compare=False)
    func: Callable[[Runner], str | None] = field(compare=False)

    def __call__(self) -> str | None:
        """Raises CheckFailed, or CheckSkipped (a unittest.SkipTest: pytest shows it as skipped)
        when one_per_target failed and this check's explains fail the same way; returns a note or None."""
        if self.name == "one_per_target":
            try:
                note = self.func(self.runner)
            except CheckFailed as exc:
                self.runner.verdicts["one_per_target"] = str(exc)
                raise
            self.runner.verdicts["one_per_target"] = None
            return note
        try:
            return self.func(self.runner)
        except ExplainFailed:
            if self.name == "metadata" or _one_per_target_verdict(self.runner) is None:
                raise
            raise CheckSkipped(f"skipped: one_per_target failed (its message says why; this check's explains "
                               f"fail the same way)") from None

    def __str__(self) -> str:
        return f"{self.runner.name}:{self.name}"


def _one_per_target_verdict(r: Runner) -> str | None:
    """one_per_target's failure message (None: it passed), run now if it has not run yet."""
    if "one_per_target" not in r.verdicts:
        try:
            check_one_per_target(r)
            r.verdicts["one_per_target"] = None
        except CheckFailed as exc:
            r.verdicts["one_per_target"] = str(exc)
    return r.verdicts["one_per_target"]


def check_metadata(r: Runner) -> str | None:
    """version and seeds are positive integers, target_kinds a non-empty subset of the three kinds,
    config() JSON-serialisable (it enters the job key and the result file)."""
    cls = r.cls
    problems = []
    if not (isinstance(cls.version, int) and cls.version >= 1):
        problems.append(f"version is {cls.version!r}, not a positive integer")
    if not (isinstance(cls.seeds, int) and cls.seeds >= 1):
        problems.append(f"seeds is {cls.seeds!r}, not a positive integer")
    kinds = tuple(getattr(cls, "target_kinds", KINDS))
    if not kinds or set(kinds) - set(KINDS):
        problems.append(f"target_kinds is {kinds!r}; a non-empty subset of {KINDS}")
    try:
        json.dumps(r.make().config(), sort_keys=True)
    except (TypeError, ValueError) as exc:
        problems.append(f"config() is not JSON-serialisable: {exc}")
    names = r.make().resource_names()
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        problems.append(f"resource_names() returned {names!r}, not a tuple of names")
    if problems:
        raise CheckFailed("metadata: " + "; ".join(problems))
    skipped = [k for k in KINDS if k not in kinds]
    return f"declares target_kinds {kinds}; {', '.join(skipped)} targets skipped" if skipped else None


def check_one_per_target(r: Runner) -> str | None:
    """One Explanation per target, in the order asked, for every declared kind; shuffled targets
    come back in the shuffled order (an explainer that sorts its targets answers the wrong one)."""
    for name in r.make().resource_names():  # built first (as the runner does), so the cost is the method's own
        r.world.context.resources[name]
    r.explain(0, what="one_per_target")
    targets = list(r.world.case(r.kinds).targets)
    shuffled = [targets[i] for i in np.random.default_rng(1).permutation(len(targets))]
    if shuffled == targets:
        shuffled = targets[::-1]
    r.explain(0, shuffled, what="one_per_target (shuffled targets)")
    for kind in r.kinds:
        r.explain(0, r.world.targets[kind][:1], what=f"one_per_target (a single {kind} target)")
    return None


def check_weights(r: Runner) -> str | None:
    """Every concept a non-empty string with a finite, non-negative weight; at least one target
    explained by at least one word (an explainer that says nothing scores at the floor)."""
    out = r.explain(0, what="weights")
    bad = [f"{e.target.key}: {w!r}={v!r}" for e in out for w, v in e.concepts
           if not (isinstance(w, str) and w and isinstance(v, (int, float, np.floating))
                   and math.isfinite(v) and v >= 0)]
    if bad:
        raise CheckFailed("weights: not finite and non-negative: " + "; ".join(bad[:4]))
    if not any(e.concepts for e in out):
        raise CheckFailed("weights: every explanation is empty (no concept for any target)")
    return None


def check_seeds(r: Runner) -> str | None:
    """Deterministic for a seed (two fresh instances, same seed: the same words and weights); a
    stochastic explainer varies with the seed, a deterministic one does not."""
    a = r.explain(0, what="seeds")
    b = r.explain(0, what="seeds (again, same seed)")
    if _record(a) != _record(b):
        raise CheckFailed(f"seeds: two runs with the same seed differ ({_first_difference(a, b)}); an explainer "
                          "must draw its randomness from context.seed only")
    c = r.explain(1, what="seeds (another seed)")
    differs = _record(a) != _record(c)
    if r.cls.stochastic and not differs:
        raise CheckFailed("seeds: declared stochastic but seeds 0 and 1 give identical explanations; declare "
                          "stochastic = False (it is then scored once), or use context.seed")
    if not r.cls.stochastic and differs:
        raise CheckFailed(f"seeds: not declared stochastic but seeds 0 and 1 differ ({_first_difference(a, c)}); "
                          "declare stochastic = True so the harness scores several seeds")
    return None


def check_no_ground_truth(r: Runner) -> str | None:
    """Reads no ground truth unless a declared oracle: the explanation is the same when the context
    carries (shuffled, fake) attributes and the subject a training card that spells the spurious
    correlation, as when they are hidden (as the harness hides them)."""
    if r.cls.is_oracle:
        r.explain(0, what="no_ground_truth (oracle, with attributes)")
        return "declared oracle: reads ground truth by design"
    explainer = r.make()
    subject, context, case = r.view(explainer, 0)
    clean = r.explain(0, what="no_ground_truth (hidden)")
    runs = r.plain_runs.get(0, [])
    if len(runs) < 2:
        r.explain(0, what="no_ground_truth (hidden, again)")
        runs = r.plain_runs.get(0, [])
    if any(run != runs[0] for run in runs[1:]):
        raise CheckSkipped("no_ground_truth: skipped: not deterministic for a fixed seed: see the seeds check (two "
                           "runs with identical inputs differ, so a change when ground truth is in reach says "
                           "nothing about reading it)")
    rng = np.random.default_rng(3)
    poisoned_attributes = {k: tuple(np.asarray(v)[rng.permutation(len(v))]) for k, v in r.world.attributes.items()}
    poisoned_attributes["label"] = tuple("round" if i % 2 else "angular" for i in range(len(context.probe.ids)))
    leaky_subject = dataclasses.replace(subject, config=dict(r.world.card))
    leaky_context = dataclasses.replace(context, attributes=poisoned_attributes)
    leaky = r.explain(0, subject=leaky_subject, context=leaky_context, what="no_ground_truth (attributes shown)")
    if _record(clean) != _record(leaky):
        raise CheckFailed(f"no_ground_truth: the explanation changes when ground truth is in reach "
                          f"(context.attributes or subject.config): {_first_difference(clean, leaky)}; only a "
                          "declared oracle (is_oracle = True) may read them")
    return None


def check_no_mutation(r: Runner) -> str | None:
    """Does not modify the context it was given: the probe arrays (writeable copies here, so that
    a write is seen rather than refused) and the vocabulary (a list here). The resources mapping
    is read-only already."""
    explainer = r.make()
    subject, context, case = r.view(explainer, 0)
    probe = context.probe
    copies = {n: np.array(getattr(probe, n), copy=True) for n in ("images", "features", "logits")}
    originals = {n: np.array(a, copy=True) for n, a in copies.items()}
    vocabulary = list(context.vocabulary)
    open_context = dataclasses.replace(context, probe=Probe(copies["images"], copies["features"], copies["logits"],
                                                            probe.layer, tuple(probe.ids)),
                                       vocabulary=vocabulary)
    r.explain(0, subject=subject, context=open_context, what="no_mutation")
    changed = [f"probe.{n}" for n in copies if not np.array_equal(copies[n], originals[n], equal_nan=True)]
    if vocabulary != list(context.vocabulary):
        changed.append(f"vocabulary ({len(context.vocabulary)} -> {len(vocabulary)} words)")
    if changed:
        raise CheckFailed(f"no_mutation: the explainer modified {', '.join(changed)}; these are shared with every "
                          "other explainer (copy before changing: np.array(x, copy=True))")
    return None


def check_resources(r: Runner) -> str | None:
    """Declares the shared resources it reads: what it read from context.resources is in
    resource_names() (their identities enter the job key, so a new CLIP recomputes the job)."""
    recorder = RecordingResources(r.world.context.resources)
    r.explain(0, resources=recorder, what="resources")
    declared = set(r.make().resource_names())
    undeclared = sorted(set(recorder.read) - declared)
    if undeclared:
        raise CheckFailed(f"resources: read context.resources[{', '.join(map(repr, undeclared))}] but "
                          f"resource_names() returns {tuple(sorted(declared))}; declare every resource it reads")
    unused = sorted(declared - set(recorder.read))
    return f"declares {unused} but did not read them on the tiny world" if unused else None


CHECKS: tuple[tuple[str, Callable[[Runner], str | None]], ...] = (
    ("metadata", check_metadata),
    ("one_per_target", check_one_per_target),
    ("weights", check_weights),
    ("seeds", check_seeds),
    ("no_ground_truth", check_no_ground_truth),
    ("no_mutation", check_no_mutation),
    ("resources", check_resources),
)


def explainer_checks(explainer: str | type, options: Mapping[str, Any] | None = None,
                     cache_dir: str | Path | None = None) -> list[Check]:
    """The conformance checks of one explainer configuration (a registered name, `module:Class`
    or the class), in order; the tiny world is built on first use and shared."""
    name, cls = resolve_explainer(explainer)
    runner = Runner(name, cls, dict(options or {}), Path(cache_dir) if cache_dir is not None else None)
    return [Check(n, runner, f) for n, f in CHECKS]


@dataclass(frozen=True)
class Outcome:
    check: str
    passed: bool
    message: str
    seconds: float
    skipped: bool = False  # could not be told (message: why); neither passed nor failed


def run_checks(checks: Sequence[Check]) -> tuple[list[Outcome], float | None]:
    """Run every check (a failure does not stop the others). Returns the outcomes and the cost
    per target in seconds (fit + explain over the targets of the first full explain)."""
    outcomes = []
    for check in checks:
        t0 = time.perf_counter()
        try:
            note = check()
            outcomes.append(Outcome(check.name, True, note or "", time.perf_counter() - t0))
        except CheckFailed as exc:
            outcomes.append(Outcome(check.name, False, str(exc), time.perf_counter() - t0))
        except CheckSkipped as exc:
            outcomes.append(Outcome(check.name, False, str(exc), time.perf_counter() - t0, skipped=True))
    timings = checks[0].runner.timings if checks else {}
    per_target = (timings["one_per_target"] / timings["one_per_target:targets"]
                  if timings.get("one_per_target:targets") else None)
    return outcomes, per_target


# ------------------------------------------------------------------------------------ the command


def check_explainer(explainer: str | type, options: Mapping[str, Any] | None = None,
                    cache_dir: str | Path | None = None) -> list[Outcome]:
    """Run every check; raise CheckFailed listing all failures, else return the outcomes."""
    outcomes, _ = run_checks(explainer_checks(explainer, options, cache_dir))
    failed = [o for o in outcomes if not o.passed and not o.skipped]
    if failed or any(o.skipped for o in outcomes):
        raise CheckFailed("; ".join(o.message for o in outcomes if not o.passed))
    return outcomes
