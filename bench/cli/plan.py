"""`fexbench plan`: the job graph's size and estimated cost (fexbench.harness.plan)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fexbench.core.contract import Environment
from fexbench.core.errors import UsageError
from fexbench.harness.plan import make_plan, report


def cmd_plan(args: argparse.Namespace) -> int:
    from fexbench.harness.config import default_config, load_config

    flags = dict(replicates=args.replicates, device=args.device, tasks=args.tasks, explainers=args.explainers)
    config = load_config(args.config, lint=True, overrides=flags) if args.config else \
        default_config().with_overrides(**flags)
    run = config.run
    env = Environment(seed=run.seed, device=run.device, explainer_seeds=run.explainer_seeds,
                      replicates=run.replicates, resource_configs=config.resource_configs())
    timing = None
    if args.timing:
        try:
            timing = json.loads(Path(args.timing).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--timing {args.timing}: cannot read a timing.json ({exc})") from None
        if not isinstance(timing, dict):
            raise UsageError(f"--timing {args.timing}: not a timing.json object")
    plan = make_plan(config.task_names(), config.explainer_names(), env, config.task_configs(),
                     config.explainer_configs(), gpus=args.gpus, workers=args.workers, timing=timing)
    print(report(plan))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="the run's job graph, its estimated cost per stage and wall time on N workers")
    p.add_argument("--config", help="a TOML run config (default: the embedded default run)")
    p.add_argument("--gpus", type=_positive, default=1, help="GPUs available (device cuda; default 1)")
    p.add_argument("--workers", type=_positive, help="Ray workers running at once (default: one per GPU on cuda, 1 on cpu)")
    p.add_argument("--tasks", help="comma-separated task names (overrides the config)")
    p.add_argument("--explainers", help="comma-separated explainer names (overrides the config)")
    p.add_argument("--replicates", type=int, help="replicates (overrides the config)")
    p.add_argument("--device", help="the device to plan for (overrides the config; not checked to exist)")
    p.add_argument("--timing", metavar="FILE", help="a timing.json of a run of this config: calibrate to it")
    p.set_defaults(func=cmd_plan)

