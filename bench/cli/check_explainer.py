"""`fexbench check-explainer`: the conformance kit of fexbench.testing from the command line."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from fexbench.testing import default_cache_dir, explainer_checks, run_checks, tiny_world


def cmd_check(args: argparse.Namespace) -> int:
    from fexbench.core.registry import RegistryError
    try:
        options = json.loads(args.options) if args.options else {}
    except json.JSONDecodeError as exc:
        raise RegistryError(f"--options is not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise RegistryError(f"--options must be a JSON object of constructor arguments, not {args.options!r}")
    start = time.perf_counter()
    checks = explainer_checks(args.explainer, options, args.cache_dir)
    tiny_world(checks[0].runner.cache_dir)  # built before the first check, so its cost is not the check's
    world_s = time.perf_counter() - start
    outcomes, per_target = run_checks(checks)
    width = max(len(o.check) for o in outcomes)
    for o in outcomes:
        status = "ok  " if o.passed else "skip" if o.skipped else "FAIL"
        print(f"{status} {o.check:{width}s} {o.seconds:5.1f}s  {o.message}".rstrip())
    failed = [o for o in outcomes if not o.passed and not o.skipped]
    skipped = [o for o in outcomes if o.skipped]
    from fexbench.core.card import card_warnings
    warnings = card_warnings(checks[0].runner.cls)  # a warning, never a failure: the card is presentation
    for warning in warnings:
        print(f"warn card {warning}")
    cost = f"{per_target * 1000:.1f} ms per target (fit + explain, tiny world)" if per_target is not None else "n/a"
    passed = len(outcomes) - len(failed) - len(skipped)
    print(f"\n{checks[0].runner.name}: {passed}/{len(outcomes)} checks passed"
          + (f", {len(failed)} failed, {len(skipped)} skipped" if skipped else "") + f"; cost {cost}; "
          f"tiny world {world_s:.1f}s, total {time.perf_counter() - start:.1f}s"
          + (f"; {len(warnings)} method-card warning{'s' if len(warnings) != 1 else ''} (the site needs the card; "
             "see docs/writing-an-explainer.md#the-method-card)" if warnings else ""))
    return 1 if failed or skipped else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("check-explainer", help="check an explainer against the contract on a tiny world "
                                                      "(seconds); exit 1 if a check fails")
    p.add_argument("explainer", help="a registered explainer name, or module:Class")
    p.add_argument("--options", help="constructor arguments as a JSON object, e.g. '{\"n_words\": 5}'")
    p.add_argument("--cache-dir", help=f"cache of the tiny resources (default: {default_cache_dir()})")
    p.set_defaults(func=cmd_check)
    return p

