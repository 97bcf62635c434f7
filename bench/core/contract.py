"""The contract between tasks, explainers and the harness: small, frozen, one screen.

Data flows one way: a Task prepares Cases (a subject model, what it may show an explainer,
which targets to explain); an Explainer turns each Case into Explanations; the Task scores them
against ground truth it measured itself and never showed the explainer.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Sequence

import numpy as np

from fexbench.core.card import MethodCard, Paper  # noqa: F401  (re-exported: plugins declare cards through the contract)

if TYPE_CHECKING:
    from fexbench.core.cache import ArrayCache


class ExplainerError(RuntimeError):
    """An explainer broke the contract (wrong count, NaN or negative weights, ...)."""


@dataclass(frozen=True)
class Target:
    """What is explained: a class of the subject, a unit of a layer, or a direction in a feature space."""

    kind: Literal["class", "unit", "direction"]
    index: int = -1
    name: str = ""
    layer: str = "penultimate"
    direction: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("class", "unit", "direction"):
            raise ValueError(f"Target.kind must be class, unit or direction, not {self.kind!r}")
        if self.kind == "direction" and not self.direction:
            raise ValueError("a direction target needs its direction vector")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name or self.index}@{self.layer}"


@dataclass(frozen=True)
class Explanation:
    """Concepts ranked by non-negative weight, plus optional evidence (sentences, captions, image ids)."""

    target: Target
    concepts: tuple[tuple[str, float], ...]
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for word, weight in self.concepts:
            if not isinstance(word, str) or not word:
                raise ExplainerError(f"{self.target.key}: concept {word!r} is not a non-empty string")
            if not (isinstance(weight, (int, float, np.floating)) and math.isfinite(weight) and weight >= 0):
                raise ExplainerError(f"{self.target.key}: weight of {word!r} is {weight!r}; "
                                     "weights must be finite and non-negative")

    @classmethod
    def from_weights(cls, target: Target, weights: Mapping[str, float], evidence: Sequence[str] = (),
                     top_k: int | None = None) -> "Explanation":
        """Rank a word -> weight mapping (ties broken by word, so the order is reproducible); zero
        weights are left out, NaN or negative ones are an error like in the constructor."""
        for word, value in weights.items():  # the same rule as the constructor: never drop a bad weight silently
            if not (isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(value) and value >= 0):
                raise ExplainerError(f"{target.key}: weight of {word!r} is {value!r}; "
                                     "weights must be finite and non-negative")
        ranked = sorted(((w, float(v)) for w, v in weights.items()), key=lambda p: (-p[1], p[0]))
        ranked = [p for p in ranked if p[1] > 0][:top_k]
        return cls(target, tuple(ranked), tuple(evidence))

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.concepts)

    def words(self, k: int | None = None) -> list[str]:
        return [w for w, _ in self.concepts[:k]]


@dataclass(frozen=True, eq=False)
class Probe:
    """The probe images an explainer may look at, with the subject's cached view of them.

    features: (N, D) activations at `layer`; logits: (N, C). Ground-truth attributes are NOT here.
    """

    images: np.ndarray
    features: np.ndarray
    logits: np.ndarray
    layer: str
    ids: tuple[str, ...]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)


@dataclass(frozen=True, eq=False)
class Context:
    """Everything an explainer may use. `attributes` is filled only for declared oracles."""

    probe: Probe
    vocabulary: Sequence[str]
    resources: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path = Path(".fexbench-cache")
    attributes: Mapping[str, tuple[str, ...]] | None = None


@dataclass(frozen=True, eq=False)
class Subject:
    """A classifier under study. `model` is a fexbench.models.subjects.TorchClassifier: named layers, activations."""

    name: str
    model: Any
    class_names: tuple[str, ...]
    weights_hash: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Environment:
    """Where things go and how to run: what a task's `prepare` receives, shared by a whole run.
    Explainers never see it: they get a Context (their own cache area, no ground truth)."""

    cache_dir: Path = Path(".fexbench-cache")
    out_dir: Path = Path("fexbench-results")
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    amp: bool = True
    batch_size: int = 64  # forward passes of every subject kind; the config's [run] batch_size default
    workers: int | None = None
    threads: int = 0  # torch/BLAS threads of the run; 0: automatic (fexbench.core.threads.choose)
    max_bad_image_fraction: float = 0.0
    explainer_seeds: int = 0  # seeds per stochastic explainer; 0: each explainer's own (Explainer.seeds)
    replicates: int = 1  # independent replicates of every task (own world data, zoo, explainer seeds); the CLI default is 3
    # a task's own number of replicates where its design asks for another than `replicates` (a preset's
    # per-task design, chosen by `fexbench power --budget`); tasks not named use `replicates`
    task_replicates: Mapping[str, int] = field(default_factory=dict)
    job_time_limit_s: float | None = None  # per (task, explainer) job; None: no limit
    job_memory_limit_mb: float | None = None  # per job, above what the process maps at its start
    # where explainers run: "process" (a worker process that receives only the explainer's view;
    # fexbench.harness.worker) or "inline" (this process, for debugging); FEXBENCH_EXPLAINER_ISOLATION wins
    explainer_isolation: str = "process"
    resource_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def replicates_for(self, task: str) -> int:
        """How many replicates `task` runs: its own design's number, else the run's."""
        return max(1, int(self.task_replicates.get(task, self.replicates)))

    def replicate(self, index: int) -> "Environment":
        """The environment of replicate `index`: replicate 0 is the run itself (so one replicate is
        exactly a plain run); the others get run seeds derived from it, hence their own world data,
        zoo and explainer seeds, while shared resources (CLIP, captioner, bank) stay shared."""
        if index == 0:
            return self
        from fexbench.core.seeds import derive_seed
        return dataclasses.replace(self, seed=derive_seed(self.seed, "replicate", index))

    @property
    def arrays(self) -> "ArrayCache":
        from fexbench.core.cache import ArrayCache
        return ArrayCache(self.cache_dir)

    @cached_property
    def resources(self) -> Mapping[str, Any]:
        """Shared models and banks (fexbench.core.registry.LazyResources), built on first use and
        kept for the whole run."""
        from fexbench.core.registry import LazyResources
        return LazyResources(self)


class Explainer(abc.ABC):
    """fit (optional, its cost is counted) then explain. Constructor arguments are the config."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Bumped whenever the explainer's behaviour changes (its words, weights or their order): the
    # job key includes it, so a result of the old behaviour is never resumed as current.
    version: ClassVar[int] = 1
    is_oracle: ClassVar[bool] = False
    # Stochastic: the explanations depend on context.seed. The harness then scores `seeds` explainer
    # seeds (a run may override it) and reports the mean of the seeds' statistics: one draw of a
    # noisy method, or of the random control, can land in its tail. Cheap methods can afford many.
    stochastic: ClassVar[bool] = False
    seeds: ClassVar[int] = 1
    # The target kinds this explainer can explain. A task that sends other kinds gets a "skipped"
    # row naming them, instead of a failure in the middle of a run.
    target_kinds: ClassVar[tuple[str, ...]] = ("class", "unit", "direction")
    # A control (random words, the class name): a reference point, not a method under comparison.
    control: ClassVar[bool] = False
    # The explainer's own cache area is <cache>/explainers/<cache_namespace>/ (default: its registered
    # name). Variants of one method that share fitted parts (TExplain and its contrast share the
    # translators and the sampled sentences) name the same area.
    cache_namespace: ClassVar[str] = ""
    # The method card (fexbench.core.card): display name, a paragraph, paper, code, authors. The
    # site reads it; `check-explainer` warns when a method has none. Its kind and version are the
    # class's own (the flags above, `version`). Presentation only: never in a job key or a score.
    card: ClassVar[MethodCard | None] = None

    def fit(self, subject: Subject, context: Context) -> "Explainer":
        return self

    @abc.abstractmethod
    def explain(self, subject: Subject, targets: Sequence[Target], context: Context) -> list[Explanation]:
        """One Explanation per target, in order."""

    def config(self) -> dict[str, Any]:
        """The constructor arguments, recorded with every result (sklearn's get_params, in short)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def resource_names(self) -> tuple[str, ...]:
        """The shared resources (context.resources) this configuration reads. Their content
        identities (weights or content hashes) enter the job key, so results computed with an
        older CLIP or captioner are never resumed as if they were current."""
        return ()


@dataclass(frozen=True)
class Case:
    """One subject to explain, with what the explainer may see and which targets to explain."""

    subject: Subject
    context: Context
    targets: tuple[Target, ...]
    oracle_attributes: Mapping[str, tuple[str, ...]] | None = None


class Task(abc.ABC):
    """Prepares cases and measured ground truth once, then scores any explainer's explanations."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Bumped whenever the task's data, ground truth or scoring changes: part of every job key.
    version: ClassVar[int] = 1
    metrics: ClassVar[tuple[Any, ...]] = ()
    # The resolution each published design aims for: the worst pair of compared methods' minimum
    # detectable difference under the board's rule, per board ("default", "full"). `fexbench power
    # --budget` spends a budget where it brings a task nearest its target; empty: --target is used.
    resolution_targets: ClassVar[Mapping[str, float]] = {}

    @abc.abstractmethod
    def prepare(self, env: Environment) -> "Prepared":
        """Build data, subjects and ground truth (cached by content); no explainer is involved."""

    @abc.abstractmethod
    def score(self, prepared: "Prepared", explanations: Mapping[str, list[Explanation]]) -> "Scored":
        """Score explanations (subject name -> one per target) against the prepared ground truth."""

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


@dataclass(frozen=True, eq=False)
class Prepared:
    """A task's cases with the ground truth it measured (subject name -> figures) and content hashes."""

    cases: tuple[Case, ...]
    ground_truth: Mapping[str, Mapping[str, Any]]
    hashes: Mapping[str, str]
    seed: int = 0


@dataclass(frozen=True)
class Scored:
    """Metric values (with CIs) and the per-subject raw numbers behind them. `estimates` (optional,
    fexbench.core.metrics.Estimate) keep each metric's per-unit columns, so that the harness can score a
    stochastic explainer over several seeds (mean of the seeds' statistics, CI by bootstrap)."""

    metrics: tuple[Any, ...]  # MetricValue
    per_subject: Mapping[str, Mapping[str, Any]]
    estimates: tuple[Any, ...] = ()

    @classmethod
    def of(cls, estimates: Sequence[Any], per_subject: Mapping[str, Mapping[str, Any]]) -> "Scored":
        """Scores computed from their estimates (the usual way for a task to build one)."""
        return cls(tuple(e.value() for e in estimates), per_subject, tuple(estimates))
