"""fexbench: a benchmark for methods that explain image classifiers' learned features in words."""
if __name__ != "fexbench":  # the folder was imported under its folder name (e.g. from the repository root)
    raise ImportError(f"{__name__!r} is the source folder of the `fexbench` package; install fexbench "
                      "(pip install -e .) and import fexbench")

from fexbench.core.card import MethodCard, Paper
from fexbench.core.contract import Case, Context, Explainer, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from fexbench.core.registry import register_explainer, register_task

__all__ = ["Case", "Context", "Explainer", "Explanation", "MethodCard", "Paper", "Prepared", "Probe", "Scored",
           "Subject", "Target", "Task", "register_explainer", "register_task"]
