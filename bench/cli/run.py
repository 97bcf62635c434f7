"""`fexbench run`: run explainers on tasks, write the results and print the leaderboard."""
from __future__ import annotations

import argparse
import sys
import time

from fexbench.cli.common import examples, log
from fexbench.core import profile, registry
from fexbench.harness.executors import EXECUTORS, apply_threads, make_executor


def cmd_run(args: argparse.Namespace) -> int:
    """`fexbench run`; a release run (or [run] train = false) forbids training for this run only:
    the process's setting is restored afterwards, so a later run in the same process may train."""
    import os

    from fexbench.core.release import TRAINING_ENV

    before = os.environ.get(TRAINING_ENV)
    try:
        return _run(args)
    finally:
        if before is None:
            os.environ.pop(TRAINING_ENV, None)
        else:
            os.environ[TRAINING_ENV] = before


def _run(args: argparse.Namespace) -> int:
    from fexbench.analysis.board import BOARD_FILE, board
    from fexbench.core.cache import atomic_write_json, atomic_write_text
    from fexbench.core.results import read_results_dir
    from fexbench.harness.config import default_config, load_config
    from fexbench.report.leaderboard import markdown, overview, tables
    from fexbench.harness.provenance import write_run_record
    from fexbench.harness.driver import run

    start = time.perf_counter()
    # the config (or the embedded default), then explicit flags on top; all checked before any work
    flags = dict(out=args.out, cache_dir=args.cache_dir, seed=args.seed, device=args.device, tasks=args.tasks,
                 explainer_seeds=args.explainer_seeds, replicates=args.replicates,
                 # --replicates R is every task's number: it replaces a preset's per-task design
                 task_replicates={} if args.replicates is not None else None,
                 job_time_limit_s=args.job_time_limit,
                 explainers=args.explainers, progress=False if args.quiet else None,
                 resume=False if args.no_resume else None, threads=args.threads,
                 executor=args.executor or ("ray" if args.ray_address else None),
                 release=getattr(args, "release", None))
    flags.update({k: getattr(args, k, None) for k in generated_keys() if getattr(args, k, None) is not None})
    if shipped_release_applies(args):  # plain `fexbench run`: the published default board's own zoo
        from fexbench import releases
        flags["release"] = str(releases.path(releases.DEFAULT))
    if getattr(args, "preset", None):  # a shipped preset (fexbench.presets); a --config then overrides it
        from fexbench import presets
        flags["preset"] = args.preset if args.config else None
        args.config = args.config or presets.path(args.preset)
    config = load_config(args.config, overrides=flags) if args.config else default_config().with_overrides(**flags)
    on_release = None
    if shipped_release_applies(args):  # said once the flags are known to be good
        log(f"fexbench: scoring on the shipped default release ({flags['release']}); --train trains the zoo instead")
    if config.run.release:  # verified, placed in the cache; its design is what runs (docs/release.md)
        from fexbench.harness.release import prepare_run
        config, on_release = prepare_run(config, tasks_given=bool(args.tasks) or config.run.tasks is not None,
                                         log=log)
    elif not config.run.train:
        from fexbench.core.release import forbid_training
        forbid_training("[run] train = false")
    tasks, explainers = config.task_names(), config.explainer_names()
    for name in tasks:
        registry.tasks.get(name)  # fail fast, naming the culprit, before any work
    for name in explainers:
        registry.explainers.get(name)
    executor = make_executor(config.run.executor, args.ray_address)  # Ray missing: one line saying how to install it
    env = config.environment()
    # torch's default (a thread per host core) collapses on a shared machine: the run's count is
    # the usable CPUs unless --threads, [run] threads or OMP_NUM_THREADS says (fexbench.core.threads)
    env, choice = apply_threads(env, "--threads" if args.threads else "[run] threads")
    log(f"fexbench: {choice.threads} thread{'s' if choice.threads != 1 else ''} ({choice.source})")
    if not env.progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # shard save/load bars of the captioner
    profile.reset()
    results = run(tasks, explainers, env, task_configs=config.task_configs(),
                  explainer_configs=config.explainer_configs(), resume=config.run.resume, executor=executor,
                  log=log)
    if on_release is not None:  # rendered splits as the release expects; then results record the release
        results = on_release.finish(results, env.out_dir, env.cache_dir)
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
    atomic_write_json(env.out_dir / BOARD_FILE, board(folder))  # the same conclusions, machine-readable
    write_run_record(env.out_dir, config)  # run-config.json, environment.lock: what `fexbench reproduce` needs
    extra = f" ({len(folder) - len(results)} earlier job files in the folder included)" if len(folder) > len(results) else ""
    print(f"\nresults: {env.out_dir}/<task>/<explainer>.json; summary: {summary}{extra}")
    wall = time.perf_counter() - start
    if args.profile:
        print(f"\n== where the time went (wall seconds; a stage includes the stages below it) ==\n"
              f"{profile.table(wall)}")
    print(f"wall time: {wall:.1f}s")
    return 1 if any(r.status != "ok" for r in results) else 0


def shipped_release_applies(args: argparse.Namespace) -> bool:
    """Plain `fexbench run` scores on the default board's shipped release: no config or preset, no
    release named, and nothing that changes the design the release holds (seed, replicates); a
    subset of fexbench's own tasks, any explainers, another cache or output folder keep it; a task of
    a plugin is not in the release, so naming one trains as before. `--train` opts out."""
    if (getattr(args, "train", False) or args.config or getattr(args, "preset", None)
            or getattr(args, "release", None) or args.seed is not None or args.replicates is not None):
        return False
    named = [n.strip() for n in (args.tasks or "").split(",") if n.strip()]
    return not named or set(named) <= registry.tasks.builtin_names()


def _preset_replicates(name: str) -> str:
    """What a shipped preset's [run] says about replicates, for the help text ("1 replicate",
    "5-37 replicates per task")."""
    import tomllib

    from fexbench import presets
    from fexbench.harness.config import RunSection

    run = tomllib.loads(presets.path(name).read_text(encoding="utf-8")).get("run", {})
    if run.get("release") and "replicates" not in run and not run.get("task_replicates"):
        return f"the replicates of release {run['release']}"  # its design runs (fexbench.harness.release)
    fallback = run.get("replicates", RunSection.model_fields["replicates"].default)
    per_task = run.get("task_replicates") or {}
    if per_task:
        counts = sorted({*per_task.values(), fallback})
        return f"{counts[0]}-{counts[-1]} replicates per task"
    return f"{fallback} replicate{'s' if fallback != 1 else ''}"


def defaults() -> dict[str, str]:
    """The default run's values as the help text states them: from RunSection and the registry,
    so the text cannot drift from what `fexbench run` does (tests/test_defaults.py)."""
    from fexbench.core import registry
    from fexbench.harness.config import RunSection

    field = RunSection.model_fields
    return {"replicates": str(field["replicates"].default), "out": field["out"].default,
            "cache_dir": field["cache_dir"].default, "seed": str(field["seed"].default),
            "explainer_seeds": str(field["explainer_seeds"].default), "device": field["device"].default,
            "explainers": ", ".join(sorted(registry.explainers.builtin_names()))}


def add_parser(sub) -> None:
    from fexbench import presets

    d = defaults()
    shown = {"smoke": "every task, tiny, <1 min", "full": "publication design"}
    preset_help = "; ".join(f"{name} ({', '.join(x for x in (shown.get(name), _preset_replicates(name)) if x)})"
                            for name in presets.names())
    p_run = sub.add_parser(
        "run", help=f"run explainers on tasks and print the leaderboard (default: every registered task, the "
                    f"built-in explainers, {d['replicates']} replicates)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("fexbench run --tasks waterbirds-spurious --explainers random,class-name,oracle",
                        "fexbench run --explainers oracle --threads 1 --quiet --profile"))
    p_run.add_argument("--tasks", help="comma-separated task names (default: every registered task, plugins' "
                                       "included)")
    p_run.add_argument("--explainers", help=f"comma-separated explainer names, or all (default: the built-in "
                                            f"explainers: {d['explainers']}; a plugin runs only when named or "
                                            f"with all)")
    p_run.add_argument("--config", help="a TOML run config (see datasets/configs/); flags below override it")
    p_run.add_argument("--preset", help=f"a shipped run config: {preset_help}; `fexbench list` shows them")
    p_run.add_argument("--out", help=f"results folder (default: {d['out']})")
    p_run.add_argument("--cache-dir", help=f"cache of worlds, models, features (default: {d['cache_dir']})")
    p_run.add_argument("--seed", type=int, help=f"run seed (default: {d['seed']})")
    p_run.add_argument("--explainer-seeds", type=int, metavar="N",
                       help=f"score every stochastic explainer over N seeds (default {d['explainer_seeds']}: "
                            "each explainer's own count, shown by `fexbench list`)")
    p_run.add_argument("--replicates", type=int, metavar="R",
                       help=f"independent replicates of every task: own world data, zoo and explainer seeds "
                            f"(default {d['replicates']}; a preset sets its own, and R replaces a preset's per-task "
                            f"numbers; intervals then state the uncertainty of the benchmark, see docs/statistics.md)")
    p_run.add_argument("--job-time-limit", type=float, metavar="SECONDS",
                       help="stop a (task, explainer) job after this long and record it as an error (default: none)")
    p_run.add_argument("--device", help=f"cpu, cuda, cuda:N, mps or auto (default: {d['device']})")
    p_run.add_argument("--no-resume", action="store_true", help="recompute jobs whose results already exist")
    p_run.add_argument("--threads", type=int, metavar="N",
                       help="torch/BLAS threads (default: OMP_NUM_THREADS, else the CPUs this process may use)")
    p_run.add_argument("--profile", action="store_true",
                       help="print where the time went, per stage (data, subjects, resources, fit, explain, score)")
    p_run.add_argument("--quiet", action="store_true",
                       help="no progress bars; one line per finished job still goes to stderr")
    p_run.add_argument("--executor", choices=EXECUTORS,
                       help="process: worker processes over the job graph (default; one per usable CPU); "
                            "local: in order in this process; ray: Ray tasks (pip install -e \".[ray]\"); "
                            "see docs/distributed.md")
    p_run.add_argument("--release", metavar="DIR_OR_ARCHIVE_OR_URL",
                       help="score on a release's subjects and resources (fexbench release; docs/release.md): "
                            "verified, placed in the cache, its design run, nothing trained. Default: with no "
                            "--config, --preset, --seed, --replicates or --train, the default board's release "
                            "shipped with fexbench (fexbench.releases)")
    p_run.add_argument("--train", action="store_true",
                       help="train the subject zoo from scratch instead of scoring on the shipped default release "
                            "(what a maintainer does to make a new release; CPU training differs between machines)")
    p_run.add_argument("--ray-address", metavar="ADDR",
                       help="a running Ray cluster (e.g. ray://head:10001 or auto; implies --executor ray); "
                            "default: start a local one")
    _generated_flags(p_run)
    p_run.set_defaults(func=cmd_run)


# [run] keys with a hand-written flag (a name that reads better than the key, or a switch); every
# other key gets a flag generated from its field (`--<key>`), so every [run] key can be given on the
# command line and a new key gets its flag without an edit here (tests/test_defaults.py)
HAND_WRITTEN = {"out": "--out", "cache_dir": "--cache-dir", "seed": "--seed", "explainer_seeds": "--explainer-seeds",
                "replicates": "--replicates", "job_time_limit_s": "--job-time-limit", "device": "--device",
                "resume": "--no-resume", "threads": "--threads", "progress": "--quiet", "executor": "--executor",
                "release": "--release", "train": "--train", "tasks": "--tasks", "explainers": "--explainers",
                "preset": "--preset"}


def _task_counts(text: str) -> dict[str, int]:
    """`TASK=R,TASK=R` -> {TASK: R} (checked by the config: unknown tasks and bad counts are named)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(f"expected TASK=R[,TASK=R], got {part!r}")
        out[name.strip()] = int(value)
    return out


def generated_keys() -> list[str]:
    from fexbench.harness.config import RunSection
    return [k for k in RunSection.model_fields if k not in HAND_WRITTEN]


def _generated_flags(parser: argparse.ArgumentParser) -> None:
    import typing

    from fexbench.harness.config import RunSection
    for key in generated_keys():
        field = RunSection.model_fields[key]
        flag, default = "--" + key.replace("_", "-"), field.get_default(call_default_factory=True)
        hint = f"[run] {key} (default: {default}; docs/configuration.md)"
        kinds = {a for a in typing.get_args(field.annotation) if a is not type(None)} or {field.annotation}
        if typing.get_origin(field.annotation) is dict:
            parser.add_argument(flag, type=_task_counts, metavar="TASK=R[,TASK=R]", help=hint)
        elif bool in kinds:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=hint)
        elif any(typing.get_origin(k) is dict for k in kinds):
            parser.add_argument(flag, type=_task_counts, metavar="TASK=R[,TASK=R]", help=hint)
        elif float in kinds:
            parser.add_argument(flag, type=float, help=hint)
        elif int in kinds:
            parser.add_argument(flag, type=int, help=hint)
        else:
            parser.add_argument(flag, help=hint)
