"""What two runs must agree on to count as giving the same results (shared by the executor tests)."""
from __future__ import annotations

FIELDS = ("status", "job_key", "hashes", "metrics", "per_subject", "replicates", "unit_values", "explanations")


def fingerprint(results):
    """(task, explainer) -> the fields of each result that an executor must not change."""
    out = {}
    for r in results:
        d = r.to_dict()
        out[(r.task, r.explainer)] = {k: d[k] for k in FIELDS}
    return out
