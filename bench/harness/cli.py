"""The `fexbench` command: run the benchmark, list what is registered.

User errors (an unknown task, a bad path) print one clear line and exit 2, without a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Sequence

from fexbench.core import profile, registry
from fexbench.core.errors import UsageError
from fexbench.core.registry import RegistryError
from fexbench.harness import power, reproduce
from fexbench.harness import plan as run_plan
from fexbench.harness.executors import make_executor
from fexbench.harness.prefetch import apply_threads
from fexbench.core import schema as results_schema
from fexbench.harness import publish
from tabulate import tabulate

# The modules that compute (the runner, tasks, torch) are imported inside the commands that use
# them: `fexbench --help` and `fexbench list` answer without loading torch (see tests/test_cli.py).



def cmd_run(args: argparse.Namespace) -> int:
    from fexbench.core.cache import atomic_write_text
    from fexbench.core.results import read_results_dir
    from fexbench.harness.config import default_config, load_config
    from fexbench.harness.leaderboard import markdown, overview, tables
    from fexbench.harness.provenance import write_run_record
    from fexbench.harness.runner import run

    start = time.perf_counter()
    # the config (or the embedded default), then explicit flags on top; all checked before any work
    flags = dict(out=args.out, cache_dir=args.cache_dir, seed=args.seed, device=args.device, tasks=args.tasks,
                 explainer_seeds=args.explainer_seeds, replicates=args.replicates,
                 job_time_limit_s=args.job_time_limit,
                 explainers=args.explainers, progress=False if args.quiet else None,
                 resume=False if args.no_resume else None, threads=args.threads,
                 prefetch=False if getattr(args, "no_prefetch", False) else None)
    if getattr(args, "preset", None):  # a shipped preset (fexbench.presets); a --config then overrides it
        from fexbench import presets
        flags["preset"] = args.preset if args.config else None
        args.config = args.config or presets.path(args.preset)
    config = load_config(args.config, overrides=flags) if args.config else default_config().with_overrides(**flags)
    tasks, explainers = config.task_names(), config.explainer_names()
    for name in tasks:
        registry.tasks.get(name)  # fail fast, naming the culprit, before any work
    for name in explainers:
        registry.explainers.get(name)
    executor = make_executor(args.executor, args.ray_address,  # Ray missing: one line saying how to install it
                             prefetch=config.run.prefetch)
    env = config.environment()
    # torch's default (a thread per host core) collapses on a shared machine: the run's count is
    # the usable CPUs unless --threads, [run] threads or OMP_NUM_THREADS says (fexbench.core.threads)
    env, choice, own = apply_threads(env, getattr(executor, "prefetch", False),
                                     "--threads" if args.threads else "[run] threads")
    split = f", {own} in this process and {own} in its prefetch helper" if own != choice.threads else ""
    log(f"fexbench: {choice.threads} thread{'s' if choice.threads != 1 else ''} ({choice.source}){split}")
    if not env.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # shard save/load bars of the captioner
    profile.reset()
    results = run(tasks, explainers, env, task_configs=config.task_configs(),
                  explainer_configs=config.explainer_configs(), resume=config.run.resume, executor=executor,
                  log=log)
    for task, table in tables(results).items():
        print(f"\n== {task} ==\n{table}")
    if len({r.task for r in results}) > 1:
        print(f"\n== overview: each task's headline metric ==\n{overview(results)}")
    # summary.md describes the whole folder: this run's results plus any other job files already in it
    this_run = {(r.task, r.explainer) for r in results}
    others, problems = read_results_dir(env.out_dir)
    folder = sorted(results + [r for r in others if (r.task, r.explainer) not in this_run],
                    key=lambda r: (r.task, r.explainer))
    for problem in problems:
        print(f"summary: {problem}", file=sys.stderr)  # "skipped <file>: why" or an unverified file
    summary = atomic_write_text(env.out_dir / "summary.md", markdown(folder))
    write_run_record(env.out_dir, config)  # run-config.json, environment.lock: what `fexbench reproduce` needs
    extra = f" ({len(folder) - len(results)} earlier job files in the folder included)" if len(folder) > len(results) else ""
    print(f"\nresults: {env.out_dir}/<task>/<explainer>.json; summary: {summary}{extra}")
    wall = time.perf_counter() - start
    if args.profile:
        print(f"\n== where the time went (wall seconds; a stage includes the stages below it) ==\n"
              f"{profile.table(wall)}")
    print(f"wall time: {wall:.1f}s")
    return 1 if any(r.status != "ok" for r in results) else 0


def log(line: str) -> None:
    """Progress and status lines go to stderr; stdout carries only results and tables."""
    print(line, file=sys.stderr, flush=True)


def cmd_explain(args: argparse.Namespace) -> int:
    """Explain one target of one subject of a task, print the words, optionally draw a word cloud.
    The task is prepared as `fexbench run` prepares it: the same --config (device, data, task
    options), so the subject is the very model a run's results are about."""
    from fexbench.core.contract import Prepared
    from fexbench.harness.config import default_config, load_config
    from fexbench.harness.runner import explain_cases
    from fexbench.harness.wordcloud_png import cloud_title, word_cloud_png

    flags = dict(cache_dir=args.cache_dir, seed=args.seed, device=args.device,
                 progress=False if args.quiet else None, threads=args.threads)
    config = load_config(args.config, overrides=flags) if args.config else default_config().with_overrides(**flags)
    task = registry.tasks.get(args.task)(**config.task_configs().get(args.task, {}))
    explainer_cls = registry.explainers.get(args.explainer)
    env = config.environment()
    env, _, _ = apply_threads(env, False, "--threads" if args.threads else "[run] threads")
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


def cmd_perf(args: argparse.Namespace) -> int:
    """Run a registered performance benchmark (entry point group fexbench.perf); it prints its figures."""
    if not args.name:
        print("performance benchmarks: " + (", ".join(registry.perf.names()) or "none registered"))
        return 0
    return int(registry.perf.get(args.name)(args.args) or 0)


def cmd_list(args: argparse.Namespace) -> int:
    """Tasks with their metrics, explainers, and every plugin that fails to load (without failing).
    Read from a cache kept by fexbench.harness.listing, so that listing does not import torch."""
    from fexbench.harness.listing import listing

    shown = listing()
    print("tasks:")
    for task in shown["tasks"]:
        print(f"  {task['name']:24s} {task['description']}")
        for m in task["metrics"]:
            arrow = "higher is better" if m["higher_is_better"] else "lower is better"
            print(f"    - {m['name']:28s} {m['description']} ({arrow}; range {tuple(m['value_range'])}; "
                  f"chance {m['chance']})")
    print("explainers:")
    for cls in shown["explainers"]:
        seeds = f" [stochastic: {cls['seeds']} seed{'s' if cls['seeds'] != 1 else ''}]" if cls["stochastic"] else ""
        print(f"  {cls['name']:24s} {cls['description']}{' [oracle]' if cls['oracle'] else ''}{seeds}")
    if shown["broken"]:
        print("broken plugins (not loaded; fix or uninstall them):")
        for entry in shown["broken"]:
            print(f"  {entry['group']}: {entry['name']}: {entry['error']}")
    from fexbench import presets
    print("presets (fexbench run --preset NAME):")
    for name in presets.names():
        print(f"  {name:24s} {presets.description(name)}")
    return 0


def examples(*lines: str) -> str:
    """A help text's examples block; tests/test_cli.py runs every line of it (with a tiny config)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fexbench", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("fexbench list",
                        "fexbench run --tasks waterbirds-spurious --explainers random,class-name,oracle --profile"))
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser(
        "run", help="run explainers on tasks and print the leaderboard (default: everything)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("fexbench run --tasks waterbirds-spurious --explainers random,class-name,oracle",
                        "fexbench run --explainers oracle --threads 1 --quiet --profile"))
    p_run.add_argument("--tasks", help="comma-separated task names (default: all registered)")
    p_run.add_argument("--explainers", help="comma-separated explainer names (default: all registered)")
    p_run.add_argument("--config", help="a TOML run config (see datasets/configs/); flags below override it")
    p_run.add_argument("--preset", help="a shipped run config: smoke (every task, tiny, <1 min) or full "
                                        "(publication design); `fexbench list` shows them")
    p_run.add_argument("--out", help="results folder (default: fexbench-results)")
    p_run.add_argument("--cache-dir", help="cache of worlds, models, features (default: .fexbench-cache)")
    p_run.add_argument("--seed", type=int, help="run seed (default: 0)")
    p_run.add_argument("--explainer-seeds", type=int, metavar="N",
                       help="score every stochastic explainer over N seeds (default 0: each explainer's own "
                            "count, shown by `fexbench list`)")
    p_run.add_argument("--replicates", type=int, metavar="R",
                       help="independent replicates of every task: own world data, zoo and explainer seeds "
                            "(default 1; intervals then state the uncertainty of the benchmark, see docs/statistics.md)")
    p_run.add_argument("--job-time-limit", type=float, metavar="SECONDS",
                       help="stop a (task, explainer) job after this long and record it as an error (default: none)")
    p_run.add_argument("--device", help="cpu, cuda, cuda:N, mps or auto (default: cpu)")
    p_run.add_argument("--no-resume", action="store_true", help="recompute jobs whose results already exist")
    p_run.add_argument("--no-prefetch", action="store_true",
                       help="no helper process preparing later tasks while jobs run (same results, slower "
                            "on 2+ cores; see docs/performance.md)")
    p_run.add_argument("--threads", type=int, metavar="N",
                       help="torch/BLAS threads (default: OMP_NUM_THREADS, else the CPUs this process may use)")
    p_run.add_argument("--profile", action="store_true",
                       help="print where the time went, per stage (data, subjects, resources, fit, explain, score)")
    p_run.add_argument("--quiet", action="store_true",
                       help="no progress bars; one line per finished job still goes to stderr")
    p_run.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: in order in this process (default); ray: the job graph as Ray tasks "
                            "(pip install -e \".[ray]\"; see docs/distributed.md)")
    p_run.add_argument("--ray-address", metavar="ADDR",
                       help="a running Ray cluster (e.g. ray://head:10001 or auto); default: start a local one")
    p_run.set_defaults(func=cmd_run)
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
    p_perf = sub.add_parser("perf", help="performance benchmarks of fexbench's own code (speed, memory); "
                                         "each prints its figures")
    p_perf.add_argument("name", nargs="?", help="benchmark name (omit to list them)")
    p_perf.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    p_perf.set_defaults(func=cmd_perf)
    power.add_parser(sub)
    run_plan.add_parser(sub)  # `plan`: the job graph's size and cost before booking GPUs
    results_schema.add_parser(sub)  # `schema`, `validate`
    publish.add_parser(sub)
    reproduce.add_parser(sub)
    p_list = sub.add_parser("list", help="list tasks (with metrics) and explainers")
    p_list.set_defaults(func=cmd_list)
    from fexbench.harness import agreement, check, compare  # their commands live in their own modules
    check.add_parser(sub)
    compare.add_parser(sub)
    agreement.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        # finished jobs are already written (each job's result file is written when it ends)
        print("fexbench: interrupted; finished results are kept (run again to resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"fexbench: error: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix: one line, exit 2. Imported here, on an error only."""
    from fexbench.core.threads import ThreadsError
    from fexbench.data.imageset import DataError
    from fexbench.harness.config import ConfigError

    return RegistryError, DataError, FileNotFoundError, ConfigError, UsageError, ThreadsError


if __name__ == "__main__":
    sys.exit(main())
