"""`fexbench plan`: the job graph's size and what it will cost, before anyone books GPUs.

The run's graph (fexbench.harness.graph) is built from the config without doing any work; every
node gets an estimated duration from per-unit costs (seconds per training image-epoch, per
inference image, per explained target, ...) scaled to the config's data sizes, subject models,
replicates, explainer seeds and device; then the graph is list-scheduled on the workers asked
for (a node starts when its inputs are done and a worker is free, longest remaining path
first), which gives a wall time that respects the critical path: a task's jobs wait for its
preparation, independent jobs spread over workers.

Two kinds of per-unit figures, always printed apart:
  measured   timed here, on the synthetic tasks' small CNNs and the cheap explainers, on a
             loaded 2-core CPU machine (docs/distributed.md says how; `--timing` recalibrates
             them from your own run's timing.json);
  assumed    figures nobody has timed in this repository yet: GPU throughputs of ResNet-50,
             ViT-B/16 and CLIP ViT-B-32, JPEG decoding, the model-heavy explainers per target.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tabulate import tabulate

from fexbench.core import registry
from fexbench.core.contract import Environment
from fexbench.core.errors import UsageError
from fexbench.harness.graph import JobGraph, Node, build_graph

# -- measured (docs/distributed.md: how, and under which load) -----------------------------------------
# waterbirds-spurious, rhos (0.5, 0.9, 0.98), seeds (0,), n_train 300, n_probe 100, n_test 100,
# width 16, image_size 32, on 1 thread of a loaded 2-core CPU; epochs 2 and 8 give the slope.
SYNTH_FIXED_S = 0.5            # per prepared replicate: world data, splits, ground-truth measurement
SYNTH_SUBJECT_S = 0.2          # per synthetic subject besides its training (activations, metrics)
SYNTH_EPOCH_S = 0.35           # per subject and training epoch, whatever its size (batches, evaluation)
SYNTH_TRAIN_IMAGE_S = 0.00012  # per training image-epoch of the small CNN at 32 px (an inference image: a third)
STARTUP_S = 4.0                # once per process: torch and model code warming up on the first preparation
SYNTH_REF_PIXELS = 32 * 32     # the image size those figures were measured at; cost scales with pixels
RELOAD_SUBJECT_S = 0.02        # a job worker's re-preparation from a warm cache, per subject (Ray only)
JOB_FIXED_S = 0.05             # per (task, explainer, replicate): scoring, bootstrap CIs, result file
MEASURED_TARGET_S = {          # per explained target and explainer seed (oracle/controls: CPU, any device)
    "oracle": 0.009, "class-name": 0.006, "random": 0.005,
}
# The model-heavy explainers and the embedded resources on the synthetic tasks (small models, CPU):
# measured in docs/performance.md (the default run, 2 idle cores). Per subject and seed, per target.
SMALL_SUBJECT_S = {"texplain": 1.15, "texplain-contrast": 0.03, "falcon": 0.17, "clip-dissect": 0.07}
SMALL_TARGET_S = {"texplain": 0.28}
EMBEDDED_RESOURCE_S = {"clip": 50.0, "captioner": 16.0, "caption-bank": 5.0}
# -- assumed (not timed here) ------------------------------------------------------------------------------
# Images per second on one A100-class GPU with mixed precision: (fine-tuning, inference). These are
# the commonly reported figures datasets/real-run.md already uses.
GPU_THROUGHPUT = {"resnet": (1000.0, 3000.0), "vit": (400.0, 1200.0), "clip": (1000.0, 3000.0),
                  "default": (500.0, 1500.0)}
CPU_SLOWDOWN = 30.0            # a 224-px model on CPU instead of a GPU
DECODE_IMAGES_PER_S = 75.0     # JPEG decode + resize with 8 threads (real-run.md: 5-15 min for 44k images)
MODEL_LOAD_S = 5.0             # loading one pretrained backbone from the library cache
GPU_TARGET_S = {               # per target and explainer seed on a GPU
    "clip-dissect": 0.05, "falcon": 3.0, "texplain": 6.0, "texplain-contrast": 6.0,
}
GPU_SUBJECT_S = {              # per subject and explainer seed: fitting (TExplain trains a translator)
    "clip-dissect": 2.0, "falcon": 5.0, "texplain": 20.0, "texplain-contrast": 20.0,
}
UNKNOWN_TARGET_S = 1.0         # an explainer plugin this planner knows nothing about
RESOURCE_S = {"clip": 15.0, "captioner": 20.0, "caption-bank": 60.0}
CAPTIONS_PER_S = 5000.0        # caption-bank embedding with the CLIP text tower on a GPU
REAL_SIZES = {  # images per split of the real data sets
    "waterbirds-spurious": {"train": 4795, "eval": 1199 + 5794, "decode": 11788, "targets": 2},
    "imagenet9-background": {"train": 0, "eval": 8 * 4050, "decode": 8 * 4050, "targets": 9},
}
SYNTH_TARGETS = {"waterbirds-spurious": 2, "imagenet9-background": 9}
UNKNOWN_TARGETS = 10


@dataclass
class Estimate:
    seconds: float
    basis: set[str] = field(default_factory=set)  # "measured", "assumed"
    units: str = ""


def _family(spec: Mapping[str, Any]) -> str:
    backbone = spec.get("backbone") or {}
    text = f"{backbone.get('family', '')} {backbone.get('model', '')} {backbone.get('arch', '')}".lower()
    if "open_clip" in text or "clip" in text:
        return "clip"
    if "vit" in text:
        return "vit"
    if "resnet" in text:
        return "resnet"
    return "default"


class CostModel:
    """Per-node durations for one config; `scale` holds calibration factors from a timing.json."""

    def __init__(self, task_configs: Mapping[str, Mapping[str, Any]], explainer_configs: Mapping[str, Mapping[str, Any]],
                 env: Environment, distributed: bool):
        self.task_configs, self.explainer_configs = task_configs, explainer_configs
        self.env, self.distributed = env, distributed
        self.gpu = env.device.startswith("cuda") or env.device == "auto"
        self.scale: dict[str, float] = {}
        self._tasks: dict[str, Any] = {}

    def task(self, name: str) -> Any:
        if name not in self._tasks:
            try:
                self._tasks[name] = registry.tasks.get(name)(**self.task_configs.get(name, {}))
            except Exception as exc:
                raise UsageError(f"task {name!r} cannot be planned: {type(exc).__name__}: {exc}") from None
        return self._tasks[name]

    # -- shapes ------------------------------------------------------------------------------------
    def shape(self, name: str) -> dict[str, Any]:
        """Subjects (model family, training image-epochs, evaluated images), targets, decoded images."""
        task = self.task(name)
        subjects = list(getattr(task, "subjects", None) or [])
        data = dict(getattr(task, "data", None) or {})
        real = data.get("source", "world") != "world" or bool(subjects)
        if real:
            sizes = REAL_SIZES.get(name, {"train": 5000, "eval": 5000, "decode": 10000, "targets": UNKNOWN_TARGETS})
            return {"real": True, "targets": sizes["targets"], "decode": sizes["decode"],
                    "subjects": [{"family": _family(s), "mode": s.get("mode", "all"), "eval": sizes["eval"],
                                  "train": sizes["train"] * int(s.get("epochs", 1)) if "rho" in s else 0,
                                  "train_images": sizes["train"] if "rho" in s else 0} for s in subjects]}
        strengths = getattr(task, "rhos", None) or getattr(task, "p_natives", None)
        known = strengths is not None and hasattr(task, "n_train")
        if not known:  # a task this planner has no shape for: priced like waterbirds-spurious at its defaults
            return {"real": False, "targets": UNKNOWN_TARGETS, "pixels": SYNTH_REF_PIXELS, "unknown": True,
                    "subjects": [{"family": "small-cnn", "train": 3000 * 6, "epochs": 6, "eval": 2000}] * 3}
        n = len(strengths) * len(getattr(task, "seeds", (0,)))
        pixels = int(getattr(task, "image_size", 32)) ** 2
        return {"real": False, "targets": SYNTH_TARGETS.get(name, UNKNOWN_TARGETS), "pixels": pixels,
                "subjects": [{"family": "small-cnn", "train": task.n_train * task.epochs, "epochs": task.epochs,
                              "eval": task.n_probe + task.n_test}] * n}

    # -- nodes -------------------------------------------------------------------------------------
    def prepare(self, node: Node) -> Estimate:
        shape = self.shape(node.task)
        if not shape["real"]:
            px = shape["pixels"] / SYNTH_REF_PIXELS
            s = SYNTH_FIXED_S + sum(SYNTH_SUBJECT_S + SYNTH_EPOCH_S * sub["epochs"]
                                    + SYNTH_TRAIN_IMAGE_S * px * (sub["train"] + sub["eval"] / 3)
                                    for sub in shape["subjects"])
            basis = {"assumed"} if shape.get("unknown") else {"measured"}
        else:
            s = shape["decode"] / DECODE_IMAGES_PER_S if node.replicate == 0 else 0.0
            for sub in shape["subjects"]:
                train_rate, infer_rate = GPU_THROUGHPUT[sub["family"]]
                slow = 1.0 if self.gpu else CPU_SLOWDOWN
                train = sub["train"] / train_rate if sub["mode"] == "all" else sub["train_images"] / infer_rate
                s += MODEL_LOAD_S + slow * (train + sub["eval"] / infer_rate)
            basis = {"assumed"}
        return Estimate(s * self.scale.get(f"prepare:{node.task}", 1.0), basis, f"{len(shape['subjects'])} subjects")

    def explainer_seeds(self, explainer: str) -> int:
        try:
            cls = registry.explainers.get(explainer)
        except registry.RegistryError:
            return 1
        return (self.env.explainer_seeds or cls.seeds) if getattr(cls, "stochastic", False) else 1

    def job(self, node: Node, replicates: int) -> Estimate:
        shape = self.shape(node.task)
        seeds = self.explainer_seeds(node.explainer)
        subjects, targets = len(shape["subjects"]), shape["targets"]
        if node.explainer in MEASURED_TARGET_S:
            per_target, per_subject, basis = MEASURED_TARGET_S[node.explainer], 0.0, {"measured"}
        elif not shape["real"] and node.explainer in SMALL_SUBJECT_S:
            per_target, basis = SMALL_TARGET_S.get(node.explainer, 0.0), {"measured"}
            per_subject = SMALL_SUBJECT_S[node.explainer]
        else:
            slow = 1.0 if self.gpu else CPU_SLOWDOWN
            per_target = slow * GPU_TARGET_S.get(node.explainer, UNKNOWN_TARGET_S)
            per_subject, basis = slow * GPU_SUBJECT_S.get(node.explainer, 0.0), {"assumed"}
        s = replicates * (JOB_FIXED_S + subjects * seeds * (per_subject + targets * per_target))
        if self.distributed:  # a Ray worker re-prepares the task from the shared cache first
            s += replicates * subjects * (RELOAD_SUBJECT_S if not shape["real"] else MODEL_LOAD_S)
        units = f"{replicates * subjects * targets * seeds} target-seeds"
        return Estimate(s * self.scale.get(f"job:{node.task}/{node.explainer}", 1.0), basis, units)

    def resource(self, node: Node) -> Estimate:
        options = dict(self.env.resource_configs.get(node.resource, {}))
        if not options and node.resource in EMBEDDED_RESOURCE_S:  # the embedded, trained-here default
            return Estimate(EMBEDDED_RESOURCE_S[node.resource], {"measured"}, "one build")
        s = RESOURCE_S.get(node.resource, 30.0)
        if node.resource == "caption-bank" and (options.get("dataset") or options.get("path")):
            s += 3_300_000 / CAPTIONS_PER_S  # Conceptual Captions' ~3.3M captions (assumed bank size)
        return Estimate(s * (1.0 if self.gpu else CPU_SLOWDOWN), {"assumed"}, "one build")

    def estimate(self, node: Node, replicates: int) -> Estimate:
        if node.kind == "prepare":
            return self.prepare(node)
        if node.kind == "job":
            return self.job(node, replicates)
        return self.resource(node)

    def calibrate(self, graph: JobGraph, timing: Mapping[str, Any]) -> list[str]:
        """Scale this model to a measured run of the same config (its timing.json): per task the
        preparation, per job its wall time. Returns the calibrated node ids."""
        done = []
        saved = dict(self.scale)
        self.scale = {}
        measured_reps = max(1, int(timing.get("replicates", 1)))
        for task, entry in (timing.get("tasks") or {}).items():
            preps = [n for n in graph.of_kind("prepare") if n.task == task]
            task_reps = entry.get("replicates", measured_reps)
            task_reps = task_reps if isinstance(task_reps, int) and task_reps >= 1 else measured_reps
            if preps and isinstance(entry.get("prepare_s"), (int, float)):
                predicted = self.prepare(preps[0]).seconds * task_reps
                seconds = float(entry["prepare_s"])
                if task == graph.task_names[0]:  # the run's first preparation also warmed its process up
                    seconds = max(seconds - STARTUP_S, 0.1 * seconds)
                if predicted > 0:
                    saved[f"prepare:{task}"] = seconds / predicted
                    done.append(f"prepare:{task}")
            for explainer, seconds in (entry.get("jobs_s") or {}).items():
                jobs = [n for n in graph.of_kind("job") if n.task == task and n.explainer == explainer]
                if jobs and isinstance(seconds, (int, float)):
                    predicted = self.job(jobs[0], task_reps).seconds
                    if predicted > 0:
                        saved[f"job:{task}/{explainer}"] = float(seconds) / predicted
                        done.append(f"job:{task}/{explainer}")
        self.scale = saved
        return done


def schedule(graph: JobGraph, cost: Mapping[str, float], slots: int) -> float:
    """Makespan of list scheduling on `slots` identical workers: a node starts once its inputs are
    done and a worker is free; among ready nodes the one with the longest remaining path first."""
    children: dict[str, list[str]] = {n.id: [] for n in graph}
    for n in graph:
        for d in n.deps:
            children[d].append(n.id)
    rank: dict[str, float] = {}
    for n in reversed(graph.nodes):
        rank[n.id] = cost[n.id] + max((rank[c] for c in children[n.id]), default=0.0)
    waiting = {n.id: len(n.deps) for n in graph}
    order = {n.id: i for i, n in enumerate(graph)}
    ready = [(-rank[i], order[i], i) for i, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + cost[node], node))
        now, node = heapq.heappop(running)
        for c in children[node]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-rank[c], order[c], c))
    return now


def critical_path(graph: JobGraph, cost: Mapping[str, float]) -> float:
    finish: dict[str, float] = {}
    for n in graph:
        finish[n.id] = cost[n.id] + max((finish[d] for d in n.deps), default=0.0)
    return max(finish.values(), default=0.0)


@dataclass
class Plan:
    graph: JobGraph
    estimates: dict[str, Estimate]
    slots: int
    device: str
    total_s: float
    critical_s: float
    wall_s: float
    calibrated: list[str]


def make_plan(task_names: Sequence[str], explainer_names: Sequence[str], env: Environment,
              task_configs: Mapping[str, Mapping[str, Any]] | None = None,
              explainer_configs: Mapping[str, Mapping[str, Any]] | None = None,
              gpus: int = 1, workers: int | None = None, timing: Mapping[str, Any] | None = None) -> Plan:
    """Estimate a run: the graph, a duration per node, and the wall time on the given workers
    (on cuda every node holds a GPU, so min(gpus, workers) run at once; on cpu, `workers`)."""
    task_configs, explainer_configs = task_configs or {}, explainer_configs or {}
    if gpus < 1 or (workers is not None and workers < 1):
        raise UsageError("--gpus and --workers must be at least 1")
    graph = build_graph(task_names, explainer_names, env, task_configs, explainer_configs)
    cuda = env.device.startswith("cuda")
    slots = (min(gpus, workers) if workers else gpus) if cuda else (workers or 1)
    model = CostModel(task_configs, explainer_configs, env, distributed=slots > 1)
    calibrated = model.calibrate(graph, timing) if timing else []
    estimates = {n.id: model.estimate(n, graph.replicates_of(n.task)) for n in graph}
    cost = {i: e.seconds for i, e in estimates.items()}
    return Plan(graph, estimates, slots, env.device, STARTUP_S + sum(cost.values()),
                STARTUP_S + critical_path(graph, cost), STARTUP_S + schedule(graph, cost, slots), calibrated)


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def report(plan: Plan) -> str:
    g = plan.graph
    counts = g.counts()
    lines = [f"job graph: {len(g)} nodes ({counts['resource']} resource builds, {counts['prepare']} task "
             f"preparations = {len(g.task_names)} tasks x {g.replicates} replicates, {counts['job']} explain+score "
             f"jobs = {len(g.task_names)} tasks x {len(g.explainer_names)} explainers), {g.edges()} dependencies",
             f"device: {plan.device}; {plan.slots} worker(s) at once" + (" (each holding one GPU)"
                                                                         if plan.device.startswith("cuda") else ""),
             ""]
    rows = []
    for kind, stage in (("resource", "shared resources"), ("prepare", "task preparation (data, zoo, activations)"),
                        ("job", "explain + score")):
        nodes = g.of_kind(kind)
        if not nodes:
            continue
        est = [plan.estimates[n.id] for n in nodes]
        basis = sorted(set().union(*(e.basis for e in est)))
        if any(n.id in plan.calibrated or (kind == "prepare" and f"prepare:{n.task}" in plan.calibrated)
               for n in nodes):
            basis.append("calibrated")
        rows.append([stage, len(nodes), human(sum(e.seconds for e in est)), human(max(e.seconds for e in est)),
                     ", ".join(basis)])
    lines.append(tabulate(rows, headers=["stage", "nodes", "total", "longest node", "per-unit figures"]))
    lines.append("")
    per = []
    for n in g:
        e = plan.estimates[n.id]
        per.append([n.id, human(e.seconds), e.units, ", ".join(sorted(e.basis))])
    lines.append(tabulate(per, headers=["node", "estimate", "size", "figures"]))
    lines += ["", f"process start-up, once (measured): {human(STARTUP_S)}",
              f"total work (one worker, in order): {human(plan.total_s)}",
              f"critical path (unlimited workers): {human(plan.critical_s)}",
              f"estimated wall time on {plan.slots} worker(s): {human(plan.wall_s)}",
              "measured: per-unit costs timed on this repository's synthetic tasks and cheap explainers "
              "(CPU, loaded machine); assumed: GPU throughputs, JPEG decoding, model-heavy explainers "
              "(docs/distributed.md)."]
    if plan.calibrated:
        lines.append(f"calibrated to the given timing.json: {', '.join(plan.calibrated)}")
    return "\n".join(lines)
