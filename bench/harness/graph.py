"""A run as a job graph: what must be built, in which order, and which builds are independent.

`fexbench run` is three kinds of work with a dependency order between them: shared resources
(a CLIP model, a captioner, a caption bank) that explainers declare through `resource_names()`,
the preparation of each task replicate (data, the subject zoo, activations, measured ground
truth: one `Task.prepare`), and one explain+score job per (task, explainer) over every replicate
(what `fexbench.harness.runner.run_job` computes). Writing the run down as a graph lets the
executors (fexbench.harness.executors) walk it in order in this process, spread it over worker
processes or over a Ray cluster, and lets `fexbench plan` price it before anyone books GPUs. The
graph holds names and configs only (it is cheap to build and to ship); the work happens in the
executors. The job key (written into each result) is the runner's: it holds the prepared data and
weight hashes, known only once preparation ran.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from fexbench.core import registry
from fexbench.core.contract import Environment

KINDS = ("resource", "prepare", "job")


@dataclass(frozen=True)
class Node:
    """One unit of work. `id` is readable and unique in a graph ("prepare:waterbirds-spurious#1");
    `deps` are ids of nodes that must finish first."""

    kind: str
    id: str
    deps: tuple[str, ...] = ()
    task: str = ""
    replicate: int = -1
    explainer: str = ""
    resource: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # the task's, explainer's or resource's kwargs
    model_work: bool = True  # loads or trains a model: runs on a GPU when the run's device is cuda


@dataclass(frozen=True)
class JobGraph:
    """Nodes in an order that respects every dependency (the order the sequential run used:
    each task's replicates, then its jobs, task after task; a resource just before its first job)."""

    nodes: tuple[Node, ...]
    task_names: tuple[str, ...]
    explainer_names: tuple[str, ...]
    replicates: int  # the run's; a task with its own design runs task_replicates[task]
    task_replicates: Mapping[str, int] = field(default_factory=dict)

    def replicates_of(self, task: str) -> int:
        """How many replicates `task` prepares in this graph."""
        return self.task_replicates.get(task, self.replicates)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]

    @property
    def _by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]

    def counts(self) -> dict[str, int]:
        return {k: len(self.of_kind(k)) for k in KINDS}

    def edges(self) -> int:
        return sum(len(n.deps) for n in self.nodes)


def prepare_id(task: str, replicate: int) -> str:
    return f"prepare:{task}#{replicate}"


def job_id(task: str, explainer: str) -> str:
    return f"job:{task}/{explainer}"


def resource_id(name: str) -> str:
    return f"resource:{name}"


def declared_resources(explainer: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The shared resources an explainer configuration reads; () when it cannot even be built
    (its job then fails by itself, named, exactly as in the sequential run)."""
    try:
        return tuple(registry.explainers.get(explainer)(**options).resource_names())
    except Exception:
        return ()


def build_graph(task_names: Sequence[str], explainer_names: Sequence[str], env: Environment,
                task_configs: Mapping[str, Mapping[str, Any]] | None = None,
                explainer_configs: Mapping[str, Mapping[str, Any]] | None = None) -> JobGraph:
    """The run's graph: resource builds, one preparation per (task, replicate), one job per
    (task, explainer). Builds nothing; unknown names stay in the graph and fail at run time as
    error rows, like the sequential run's."""
    task_configs, explainer_configs = task_configs or {}, explainer_configs or {}
    explainer_opts = {e: dict(explainer_configs.get(e, {})) for e in explainer_names}
    uses = {e: declared_resources(e, explainer_opts[e]) for e in explainer_names}
    nodes: list[Node] = []
    placed: set[str] = set()
    for task in task_names:
        options = dict(task_configs.get(task, {}))
        replicates = env.replicates_for(task)
        for r in range(replicates):
            nodes.append(Node("prepare", prepare_id(task, r), task=task, replicate=r, options=options))
        for explainer in explainer_names:
            for name in uses[explainer]:
                if name not in placed:
                    placed.add(name)
                    nodes.append(Node("resource", resource_id(name), resource=name,
                                      options=dict(env.resource_configs.get(name, {}))))
            deps = tuple(prepare_id(task, r) for r in range(replicates)) + tuple(resource_id(n) for n in uses[explainer])
            nodes.append(Node("job", job_id(task, explainer), deps, task=task, explainer=explainer,
                              options=explainer_opts[explainer]))
    return JobGraph(tuple(nodes), tuple(task_names), tuple(explainer_names), max(1, env.replicates),
                    {t: env.replicates_for(t) for t in task_names})

