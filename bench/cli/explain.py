"""`fexbench explain`: one explanation of one target of one subject, printed or drawn as a word cloud."""
from __future__ import annotations

import argparse
import dataclasses

from tabulate import tabulate

from fexbench.cli.common import examples
from fexbench.core import registry
from fexbench.core.registry import RegistryError
from fexbench.harness.executors import apply_threads


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain one target of one subject of a task, print the words, optionally draw a word cloud.
    The task is prepared as `fexbench run` prepares it: the same --config (device, data, task
    options), so the subject is the very model a run's results are about."""
    from fexbench.core.contract import Prepared
    from fexbench.harness.config import default_config, load_config
    from fexbench.harness.runner import explain_cases
    from fexbench.report.wordcloud_png import cloud_title, word_cloud_png

    flags = dict(cache_dir=args.cache_dir, seed=args.seed, device=args.device,
                 progress=False if args.quiet else None, threads=args.threads)
    config = load_config(args.config, overrides=flags) if args.config else default_config().with_overrides(**flags)
    task = registry.tasks.get(args.task)(**config.task_configs().get(args.task, {}))
    explainer_cls = registry.explainers.get(args.explainer)
    known = getattr(task, "subject_names", None)  # before any training: the names follow from the task's options
    if callable(known):
        names = tuple(known())
        if args.subject not in names:
            raise RegistryError(f"task {args.task!r} has no subject {args.subject!r}; its subjects (from the task's "
                                f"options, nothing trained) are: {', '.join(names)}")
    env = config.environment()
    env, _ = apply_threads(env, "--threads" if args.threads else "[run] threads")
    prepared = task.prepare(env)
    cases = {c.subject.name: c for c in prepared.cases}
    if args.subject not in cases:
        raise RegistryError(f"task {args.task!r} has no subject {args.subject!r}; subjects: {', '.join(cases)}")
    case = cases[args.subject]
    targets = [t for t in case.targets if args.target in (t.name, str(t.index), t.key)]
    if not targets:
        raise RegistryError(f"subject {args.subject!r} has no target {args.target!r}; "
                            f"targets: {', '.join(t.name or str(t.index) for t in case.targets)}")
    case = dataclasses.replace(case, targets=tuple(targets[:1]))
    options = config.explainer_configs().get(args.explainer, {})
    explanation = explain_cases(lambda: explainer_cls(**options), Prepared((case,), {}, {}), env.seed,
                                registered_name=args.explainer)[0][args.subject][0]
    print(tabulate(explanation.concepts[:args.top], headers=["concept", "weight"], floatfmt=".4f"))
    for line in explanation.evidence[:5]:
        print(f"  evidence: {line}")
    if args.png:
        target = targets[0].name or str(targets[0].index)
        title = cloud_title(args.explainer, args.subject, target, args.task,
                            dict(prepared.ground_truth.get(args.subject, {})))
        print(f"word cloud: {word_cloud_png(explanation, args.png, title=title, seed=env.seed)}")
    return 0


def add_parser(sub) -> None:
    p_explain = sub.add_parser(
        "explain", help="explain one target of one subject and print (or draw) the words",
        epilog=examples("fexbench explain --explainer oracle --task waterbirds-spurious --subject cnn-rho0.95-s0 "
                        "--target round --png cloud.png"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p_explain.add_argument("--explainer", required=True)
    p_explain.add_argument("--task", default="waterbirds-spurious")
    p_explain.add_argument("--subject", required=True,
                           help="a subject name of the task (an error lists them), e.g. cnn-rho0.95-s0")
    p_explain.add_argument("--target", required=True, help="a target name or index, e.g. round")
    p_explain.add_argument("--config", help="the TOML run config of `fexbench run` (device, data, task and "
                                            "explainer options); flags below override it")
    p_explain.add_argument("--png", help="write a word cloud of the explanation to this PNG file")
    p_explain.add_argument("--top", type=int, default=15)
    p_explain.add_argument("--cache-dir", help="cache of worlds, models, features (default: .fexbench-cache)")
    p_explain.add_argument("--seed", type=int, help="run seed (default: 0)")
    p_explain.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p_explain.add_argument("--threads", type=int, metavar="N", help="torch/BLAS threads (as for `fexbench run`)")
    p_explain.add_argument("--quiet", action="store_true")
    p_explain.set_defaults(func=cmd_explain)
