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
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from fexbench.harness.check import (CHECKS, TINY_RESOURCES, Check, CheckFailed, Outcome, TinyWorld, explainer_checks,
                                    run_checks, tiny_world)

__all__ = ["explainer_checks", "check_explainer", "Check", "CheckFailed", "Outcome", "CHECKS", "TinyWorld",
           "tiny_world", "TINY_RESOURCES"]


def check_explainer(explainer: str | type, options: Mapping[str, Any] | None = None,
                    cache_dir: str | Path | None = None) -> list[Outcome]:
    """Run every check; raise CheckFailed listing all failures, else return the outcomes."""
    outcomes, _ = run_checks(explainer_checks(explainer, options, cache_dir))
    failed = [o for o in outcomes if not o.passed]
    if failed:
        raise CheckFailed("; ".join(o.message for o in failed))
    return outcomes
