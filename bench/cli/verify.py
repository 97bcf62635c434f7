"""`fexbench verify`: re-run a submission on a private seed and say whether its standing holds
(fexbench.analysis.verify)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from fexbench.cli.common import log


def cmd_verify(args: argparse.Namespace) -> int:
    from fexbench.analysis.verify import verify
    from fexbench.core.errors import UsageError

    options = None
    if args.options:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--options is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise UsageError(f"--options must be a JSON object of constructor arguments, not {args.options!r}")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    outcome = verify(args.submission, args.explainer, args.secret_seed_file, out=args.out, cache_dir=args.cache_dir,
                     tasks=tasks, options=options, log=log)
    print(outcome.text())
    return outcome.exit_code


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "verify", help="re-run a submitted explainer and the built-ins it was compared with on a private seed; "
                       "exit 1 when its standing on some task does not hold",
        description="Re-run SUBMISSION's design (its run-config.json) with the secret seed as the run seed (new "
                    "worlds, a new zoo, trained here), for the submitted explainer and the controls and oracle of "
                    "the submission, and compare per task: the headline value's intervals, the controls it beats, "
                    "its gap to the oracle. Exit 0 when every task is consistent, 1 otherwise, 2 for unusable input. "
                    "The seed is never printed; verification.json in --out records a hash of it, the submission's "
                    "digests and each task's verdict (docs/publishing.md#submission-protocol). For example: "
                    "fexbench verify submission/ --explainer mypkg.explainers:MyExplainer --secret-seed-file "
                    "~/.fexbench-secret-seed --out verified/")
    p.add_argument("submission", metavar="SUBMISSION", help="the submitted results folder (written by `fexbench run`)")
    p.add_argument("--explainer", required=True, metavar="NAME_OR_MODULE:Class",
                   help="the submitted explainer: a registered name, or module:Class of its installed package")
    p.add_argument("--options", help="its constructor arguments as a JSON object (default: the submission's)")
    p.add_argument("--secret-seed-file", required=True, metavar="FILE",
                   help="a file holding the private run seed, one integer, readable by its owner only (mode 600)")
    p.add_argument("--out", help="where the private run's results and verification.json go (default: a new "
                                 "temporary folder)")
    p.add_argument("--cache-dir", help="cache of the private worlds and zoo (default: the default cache; never "
                                       "the one the submission names)")
    p.add_argument("--tasks", help="comma-separated tasks to verify (default: every task the explainer has an ok "
                                   "result on)")
    p.set_defaults(func=cmd_verify)
    return p
