"""fexbench: a benchmark for methods that explain image classifiers' learned features in words."""
from bench.contract import Case, Context, Explainer, Explanation, Prepared, Probe, Scored, Subject, Target, Task
from bench.registry import register_explainer, register_task

__all__ = ["Case", "Context", "Explainer", "Explanation", "Prepared", "Probe", "Scored", "Subject", "Target",
           "Task", "register_explainer", "register_task"]
